// onnxruntime-web, WASM backend, loaded from this folder: the one place that knows where it is.
//
// The build copies ort.wasm.min.mjs (the WASM-only build) and its two runtime files into ort/;
// wasmPaths points onnxruntime at them, so it never reaches for a CDN. Threads need a page that
// is cross-origin isolated (COOP/COEP headers); elsewhere onnxruntime runs on one thread.

import * as ort from './ort/ort.wasm.min.mjs';

ort.env.wasm.wasmPaths = new URL('./ort/', import.meta.url).href;
// Run every session in onnxruntime's own worker: a batch of birds then takes no time from the
// page's thread, so the page paints, scrolls and takes clicks while it draws.
ort.env.wasm.proxy = true;
ort.env.logLevel = 'error';

export const Tensor = ort.Tensor;

export function createSession(bytes) {
  return ort.InferenceSession.create(bytes, {
    executionProviders: ['wasm'],
    graphOptimizationLevel: 'all',
  });
}
