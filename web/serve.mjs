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

const OPTIONS = {
  dir: { type: 'string', default: join(WEB, 'dist') },
  port: { type: 'string', default: '8000' },
  host: { type: 'string', default: '127.0.0.1' },
};
let values;
try {
  ({ values } = parseArgs({ options: OPTIONS }));
} catch (error) {
  // node's own words up to their first full stop: "Unknown option '--prot'", not a stack.
  console.error(`serve: ${error.message.split('. ')[0]} (options: --dir DIR, --port N, --host ADDRESS)`);
  process.exit(2);
}
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
  let stat = null;
  try {
    stat = file === null ? null : statSync(file); // a file removed since fileFor found it: 404
  } catch {}
  if (stat === null) {
    response.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`not found: ${pathname}\n`);
    return;
  }
  const { size, mtime, mtimeMs } = stat;
  // A rebuilt site is seen at once (no-cache), and an unchanged file is not sent again: the
  // browser asks with the tag it has and gets 304 (the onnxruntime WASM alone is 15 MB).
  const tag = `W/"${size.toString(16)}-${Math.floor(mtimeMs).toString(16)}"`;
  const headers = {
    'Cache-Control': 'no-cache',
    ETag: tag,
    'Last-Modified': mtime.toUTCString(),
    'X-Content-Type-Options': 'nosniff',
  };
  const known = request.headers['if-none-match'];
  if (known !== undefined && known.split(',').some((each) => each.trim() === tag)) {
    response.writeHead(304, headers).end();
    return;
  }
  response.writeHead(200, {
    ...headers,
    'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
    'Content-Length': size,
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
  // Every address of this machine: the one a browser here may use is localhost, as the page
  // checks models with SubtleCrypto, which browsers give only to https and localhost pages.
  const wildcard = address === '0.0.0.0' || address === '::';
  const host = wildcard ? 'localhost' : address.includes(':') ? `[${address}]` : address;
  const others = wildcard ? ' (other machines need https in front of it: docs/WEB.md)' : '';
  console.log(`serving ${root} at http://${host}:${bound}/${others}`);
});
