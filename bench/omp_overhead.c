/* omp_overhead.c - what a two-thread OpenMP region costs on this host: the
 * best (minimum over 2000 tries) time of a serial loop of n dependent f32
 * multiply-adds, the same work split over two threads, and an empty region.
 * Build and run: cc -O2 -fopenmp bench/omp_overhead.c -o /tmp/omp_overhead && /tmp/omp_overhead
 * (session 4, Zen 5 host: 2 threads add ~2.5 us to a region with work, so
 * layers of 7-25 us, the cnn's int8 convolutions, gain nothing from a
 * second thread there). */
#include <omp.h>
#include <stdio.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
volatile float sink;
static void work(int n){float x=1;for(int i=0;i<n;i++)x=x*1.0000001f+0.5f;sink=x;}
int main(){
  for(int n=1000;n<=64000;n*=4){
    double best1=1,best2=1,bo=1;
    for(int r=0;r<2000;r++){
      double t0=now(); work(n); double t1=now();
      #pragma omp parallel num_threads(2)
      { work(n/2); }
      double t2=now();
      #pragma omp parallel num_threads(2)
      { }
      double t3=now();
      if (t1 - t0 < best1) best1 = t1 - t0;
      if (t2 - t1 < best2) best2 = t2 - t1;
      if (t3 - t2 < bo) bo = t3 - t2;
    }
    printf("n=%d serial %.2f us, 2 threads %.2f us, empty region %.2f us\n",n,best1*1e6,best2*1e6,bo*1e6);
  }
}
