// npm run serve [-- --dir DIR] [-- --port N] [-- --host H]: the built site on a local server.
//
// A plain static server (any other would do: the site needs no server logic), here so that
// `npm run serve` needs nothing but node. It answers GET and HEAD for files inside DIR only,
// with the MIME types the page needs (WebAssembly must be application/wasm to compile as it
// streams in), and prints "serving DIR at URL" once it listens; --port 0 takes a free port.

import { createReadStream, realpathSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const WEB = dirname(fileURLToPath(import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
  '.npz': 'application/octet-stream',
};

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: join(WEB, 'dist') },
    port: { type: 'string', default: '8000' },
    host: { type: 'string', default: '127.0.0.1' },
  },
});
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`serve: --port must be a whole number from 0 to 65535, got ${values.port}`);
  process.exit(2);
}
let root;
try {
  root = realpathSync(resolve(values.dir));
} catch {
  console.error(`serve: ${resolve(values.dir)} does not exist: run npm run build first`);
  process.exit(2);
}

// The file a URL path names inside root, or null: no escape by .., by encoding or by a link.
function fileFor(urlPath) {
  let path;
  try {
    path = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (path.includes('\0')) return null;
  if (path.endsWith('/')) path += 'index.html';
  try {
    const file = realpathSync(join(root, path));
    return file.startsWith(root + sep) && statSync(file).isFile() ? file : null;
  } catch {
    return null;
  }
}

const server = createServer((request, response) => {
  const { pathname } = new URL(request.url, 'http://localhost');
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.writeHead(405, { Allow: 'GET, HEAD' }).end();
    return;
  }
  const file = fileFor(pathname);
  if (file === null) {
    response.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`not found: ${pathname}\n`);
    return;
  }
  response.writeHead(200, {
    'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
    'Content-Length': statSync(file).size,
    'Cache-Control': 'no-cache', // a rebuilt site is seen at once; unchanged files revalidate
    'X-Content-Type-Options': 'nosniff',
  });
  if (request.method === 'HEAD') response.end();
  else
    createReadStream(file)
      .on('error', () => response.destroy())
      .pipe(response);
});
server.on('error', (error) => {
  console.error(`serve: cannot listen on ${values.host}:${port} (${error.message})`);
  process.exit(2);
});
server.listen(port, values.host, () => {
  const { address, port: bound } = server.address();
  const host = address.includes(':') ? `[${address}]` : address;
  console.log(`serving ${root} at http://${host}:${bound}/`);
});
