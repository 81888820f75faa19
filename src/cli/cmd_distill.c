/* cmd_distill.c - shrink distill --teacher T --student KIND_OR_FILE --data
 * SPEC: train a student on the teacher's soft targets (knowledge
 * distillation, sh_distill) and save it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char *usage_text =
    "Usage: shrink distill --teacher T.onnx --student KIND_OR_FILE --data SPEC -o OUT [options]\n"
    "\n"
    "Train a student model (a built-in kind: mlp, mlp-small, lenet5, cnn,\n"
    "llama-tiny; or a model file) to match a teacher model's softened outputs:\n"
    "  loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))\n"
    "         + (1 - alpha) * cross-entropy(student, labels)\n"
    "Language models use the teacher's logits per position and the next tokens.\n"
    "\n"
    "Options:\n"
    "  --teacher FILE         teacher model (.onnx or llama2.c .bin), required\n"
    "  --student KIND|FILE    student: built-in kind or model file, required\n"
    "  --data SPEC            training data (required): fashion-mnist:train[:N],\n"
    "                         idx:IMAGES.gz,LABELS.gz, text:FILE[,tok=TOK.bin]\n"
    "  --val SPEC             validation data, evaluated after every epoch\n"
    "  --tokenizer TOK        tokenizer for text: data sets (adds ,tok=TOK)\n"
    "  --temperature T        softmax temperature (default 4)\n"
    "  --alpha A              weight of the distillation term in [0,1] (default 0.9;\n"
    "                         0: plain training on the labels)\n"
    "  -o, --output OUT       save the trained student (.onnx or llama2.c .bin)\n"
    "  --epochs N, --batch N, --lr X, --optimizer sgd|adamw, --momentum X,\n"
    "  --nesterov, --weight-decay X, --schedule S, --warmup X, --step-size N,\n"
    "  --gamma X, --label-smoothing X, --accum N, --seed N, --threads N,\n"
    "  --checkpoint PATH, --checkpoint-every N, --max-steps N, --seq-len N\n"
    "                         as in shrink train (see shrink train --help)\n"
    "  --json                 one JSON object on stdout instead of text\n"
    "  -q, --quiet            no progress lines\n"
    "  -h, --help             this help\n"
    "\n"
    "Example:\n"
    "  shrink train cnn --data fashion-mnist:train --epochs 2 -o cnn.onnx\n"
    "  shrink distill --teacher cnn.onnx --student mlp-small --data fashion-mnist:train \\\n"
    "      --val fashion-mnist:test --epochs 5 --temperature 4 --alpha 0.9 -o small.onnx\n"
    "\n" CLI_EXIT_CODES;


static void progress_cb(void *ctx, int epoch, int64_t step, int64_t total, double loss, double rate, double eta,
                        int epoch_end, double val)
{
    int *quiet = ctx;
    if (*quiet || !epoch_end) return;
    fprintf(stderr, "epoch %d  step %lld/%lld  loss %.4f  %.0f items/s", epoch + 1, (long long)step, (long long)total,
            loss, rate);
    if (val >= 0) fprintf(stderr, "  val %.4f", val);
    fprintf(stderr, "\n");
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *q = (const unsigned char *)(s ? s : ""); *q; q++) {
        if (*q == '"' || *q == '\\') fprintf(f, "\\%c", *q);
        else if (*q < 0x20) fprintf(f, "\\u%04x", *q);
        else fputc(*q, f);
    }
    fputc('"', f);
}

int cmd_distill(int argc, char **argv)
{
    const char *C = "distill";
    const char *teacher = NULL, *student = NULL, *data = NULL, *valspec = NULL, *out = NULL, *tok = NULL, *v;
    int json = 0, quiet = 0;
    sh_distill_opts d;
    sh_distill_opts_default(&d);
    sh_train_opts *o = &d.train;
    double fv;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define FLTOPT(flag, lo, hi, dst)                                                                                      \
    else if (strcmp(a, flag) == 0)                                                                                     \
    {                                                                                                                  \
        if (!(v = cli_arg(C, argc, argv, &i)) || cli_float(C, a, v, lo, hi, &fv)) return EXIT_USAGE;                   \
        dst = (float)fv;                                                                                               \
    }
#define STROPT(flag, dst)                                                                                              \
    else if (strcmp(a, flag) == 0)                                                                                     \
    {                                                                                                                  \
        if (!(v = cli_arg(C, argc, argv, &i))) return EXIT_USAGE;                                                      \
        dst = v;                                                                                                       \
    }
        int tr = cli_train_option(C, argc, argv, &i, o);
        if (tr < 0) return EXIT_USAGE;
        if (tr > 0) continue;
        if (cli_is_help(a)) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--json") == 0) json = 1;
        else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) quiet = 1;
        STROPT("--teacher", teacher)
        STROPT("--student", student)
        STROPT("--data", data)
        STROPT("--val", valspec)
        STROPT("--tokenizer", tok)
        STROPT("-o", out)
        STROPT("--output", out)
        FLTOPT("--temperature", 1e-3, 1e3, d.temperature)
        FLTOPT("--alpha", 0, 1, d.alpha)
        else if (a[0] == '-' && a[1]) return cli_usage(C, "unknown option '%s'", a);
        else return cli_usage(C, "unexpected argument '%s' (use --teacher and --student)", a);
    }
    if (!teacher) return cli_usage(C, "missing --teacher FILE");
    if (!student) return cli_usage(C, "missing --student KIND_OR_FILE (mlp, mlp-small, lenet5, cnn, llama-tiny or a model file)");
    if (!data) return cli_usage(C, "missing --data SPEC");
    if (!out) return cli_usage(C, "missing -o OUT");
    if (cli_train_check(C, o, data, tok)) return EXIT_USAGE;
    if (cli_model_kind_ok(C, "student", student)) return EXIT_USAGE;

    char *data_full = cli_with_tok(data, tok), *val_full = valspec ? cli_with_tok(valspec, tok) : NULL;
    sh_error err = {0};
    sh_graph *g = NULL, *t = NULL;
    sh_dataset *tr = NULL, *va = NULL;
    int rc = EXIT_OK;
    if (sh_model_load(teacher, &t, &err)) {
        rc = cli_fail(C, &err);
        goto done;
    }
    if (sh_dataset_load(data_full ? data_full : data, &tr, &err)) {
        rc = cli_fail(C, &err);
        goto done;
    }
    if (valspec && sh_dataset_load(val_full ? val_full : valspec, &va, &err)) {
        rc = cli_fail(C, &err);
        goto done;
    }
    if (cli_model_for_data(student, data, tr, o, &g, &err)) {
        rc = cli_fail(C, &err);
        goto done;
    }
    int q = quiet || json;
    o->progress = progress_cb;
    o->progress_ctx = &q;
    if (!q) {
        char b1[32], b2[32];
        fprintf(stderr,
                "distilling %s (%lld parameters, %s) into %s (%lld parameters, %s) on %s: %d epoch%s, T %g, alpha %g\n",
                teacher, (long long)sh_graph_param_count(t), cli_bytes(sh_graph_param_bytes(t), b1, sizeof b1),
                student, (long long)sh_graph_param_count(g), cli_bytes(sh_graph_param_bytes(g), b2, sizeof b2), data,
                o->epochs, o->epochs == 1 ? "" : "s", d.temperature, d.alpha);
    }
    sh_train_report rep;
    if (sh_distill(g, t, tr, va, &d, &rep, &err)) {
        rc = cli_fail(C, &err);
        goto done;
    }
    if (sh_model_save(g, out, &err)) {
        rc = cli_fail(C, &err);
        goto done;
    }
    if (json) {
        printf("{\"teacher\": ");
        json_str(stdout, teacher);
        printf(", \"student\": ");
        json_str(stdout, student);
        printf(", \"data\": ");
        json_str(stdout, data);
        printf(", \"temperature\": %g, \"alpha\": %g, \"epochs\": %d, \"batch\": %d, \"optimizer\": ", d.temperature,
               d.alpha, o->epochs, o->batch);
        json_str(stdout, o->optimizer);
        printf(", \"lr\": %g, \"schedule\": ", o->lr);
        json_str(stdout, o->schedule);
        printf(", \"teacher_params\": %lld, \"params\": %lld, \"steps\": %lld, \"final_loss\": %.6f, \"seconds\": %.3f, "
               "\"items_per_s\": %.1f",
               (long long)sh_graph_param_count(t), (long long)sh_graph_param_count(g), (long long)rep.steps,
               rep.final_loss, rep.seconds, rep.items_per_s);
        if (va) printf(", \"%s\": %.6f", tr->kind == 2 ? "val_nll" : "val_accuracy", rep.val_metric);
        printf(", \"output\": ");
        json_str(stdout, out);
        printf("}\n");
    } else {
        printf("distilled %s into %s: %lld steps in %.1f s, final loss %.4f", teacher, student, (long long)rep.steps,
               rep.seconds, rep.final_loss);
        if (va && rep.val_metric >= 0) {
            if (tr->kind == 2) printf(", val nll %.4f", rep.val_metric);
            else printf(", val accuracy %.2f%%", 100.0 * rep.val_metric);
        }
        printf("\nsaved %s\n", out);
    }
done:
    free(data_full);
    free(val_full);
    sh_graph_free(g);
    sh_graph_free(t);
    sh_dataset_free(tr);
    sh_dataset_free(va);
    return rc;
}
