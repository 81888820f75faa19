// ort_bench.js MODEL THREADS RUNS WARMUP BATCH - time ONNX Runtime (onnxruntime-node)
// on random inputs of the model's input shapes; prints the same line as bench_model:
//   median_ms X min_ms Y runs N threads T batch B
const path = require('path');
const ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));
const [model, threads = '1', runs = '200', warmup = '20', batch = '1'] = process.argv.slice(2);
(async () => {
  const s = await ort.InferenceSession.create(model, {
    intraOpNumThreads: +threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all', logSeverityLevel: 3,
  });
  const feeds = {};
  let seed = 1;
  for (const m of s.inputMetadata) {
    const shape = m.shape.map((d, i) => (typeof d === 'number' && d > 0 ? d : i === 0 ? +batch : 1));
    const n = shape.reduce((a, b) => a * b, 1);
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) { seed = (seed * 1103515245 + 12345) % 2147483648; x[i] = seed / 2147483648; }
    feeds[m.name] = new ort.Tensor('float32', x, shape);
  }
  const ms = [];
  for (let r = -(+warmup); r < +runs; r++) {
    const t0 = process.hrtime.bigint();
    await s.run(feeds);
    const dt = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r >= 0) ms.push(dt);
  }
  ms.sort((a, b) => a - b);
  const n = ms.length, med = n % 2 ? ms[(n - 1) / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  console.log(`median_ms ${med.toFixed(6)} min_ms ${ms[0].toFixed(6)} runs ${n} threads ${threads} batch ${batch}`);
})().catch((e) => { console.error('ort_bench: error: ' + e.message); process.exit(1); });
