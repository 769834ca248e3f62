// Serves aedes, the Node.js MQTT broker, for labs/compare.py on net.createServer.
// Same contract as this project's servers: prints "listening on HOST:PORT", exits 0 on SIGTERM.
// Usage: node aedes_server.js HOST PORT   (install: npm install --prefix labs/out/node aedes)
'use strict';
const net = require('net');
const aedes = require('aedes');

async function createBroker() {
  if (aedes.Aedes && typeof aedes.Aedes.createBroker === 'function') {
    return aedes.Aedes.createBroker(); // aedes >= 1.0 (checked with 1.2.0)
  }
  const factory = typeof aedes === 'function' ? aedes : aedes.default || aedes.Aedes;
  return factory(); // aedes 0.x
}

async function main() {
  const [host = '127.0.0.1', port = '0'] = process.argv.slice(2);
  const broker = await createBroker();
  const server = net.createServer(broker.handle);
  server.listen(Number(port), host, () => {
    const address = server.address();
    process.stdout.write(`listening on ${address.address}:${address.port}\n`);
  });
  process.on('SIGTERM', () => {
    server.close();
    broker.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
