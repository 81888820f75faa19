// bench_qlinear_ort_acc.js MODEL [N] [BATCH]: Fashion-MNIST test accuracy of MODEL in ONNX Runtime (pixels / 255, NCHW)
// (e.g. a QDQ export: shrink convert q.onnx -o qdq.onnx --qdq; node bench/bench_qlinear_ort_acc.js qdq.onnx)
const path = require('path'), fs = require('fs'), zlib = require('zlib');
const ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));
const [model, nstr = '10000', bstr = '100'] = process.argv.slice(2);
const D = '/usr/share/datasets/fashion-mnist/';
const img = zlib.gunzipSync(fs.readFileSync(D + 't10k-images-idx3-ubyte.gz')).subarray(16);
const lab = zlib.gunzipSync(fs.readFileSync(D + 't10k-labels-idx1-ubyte.gz')).subarray(8);
(async () => {
  const s = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, graphOptimizationLevel: 'all', logSeverityLevel: 3 });
  const N = +nstr, B = +bstr; let ok = 0;
  for (let i = 0; i < N; i += B) {
    const b = Math.min(B, N - i), x = new Float32Array(b * 784);
    for (let j = 0; j < b * 784; j++) x[j] = img[i * 784 + j] * (1.0 / 255.0);
    const r = await s.run({ [s.inputNames[0]]: new ort.Tensor('float32', x, [b, 1, 28, 28]) });
    const y = r[s.outputNames[0]].data;
    for (let k = 0; k < b; k++) { let best = 0; for (let c = 1; c < 10; c++) if (y[k * 10 + c] > y[k * 10 + best]) best = c; ok += best === lab[i + k]; }
  }
  console.log(`ort accuracy ${(100 * ok / N).toFixed(2)} % on ${N} images`);
})().catch((e) => { console.error('error: ' + e.message); process.exit(1); });
