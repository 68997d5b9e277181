// socket_peers.js - the socket benchmark's peers (bench/socket_bench.py): the same
// conversation fan-out as our socket service, as an in-memory room broadcast, on
// uWebSockets.js (@trufflesuite/uws-js-unofficial, its native pub/sub) or Socket.IO 4 (rooms).
//
//   node bench/socket_peers.js uws|sio PORT
//
// Members connect with ?rooms=r1,r2 (the conversations they belong to: no auth, which only
// favours the peers) and receive each event of those rooms as one text frame. The load
// generator connects once with ?publisher=1 and sends "room\n<event JSON>" text frames; the
// server sends <event JSON> to every member of the room. Socket.IO frames it as its protocol
// does (42["event",{...}]), so its clients speak Engine.IO 4 over a bare WebSocket
// (/socket.io/?EIO=4&transport=websocket). Prints "ready" once listening.
'use strict';

const kind = process.argv[2];
const port = Number(process.argv[3]);

function rooms(query) {
  const r = new URLSearchParams(query).get('rooms');
  return r ? r.split(',') : [];
}

if (kind === 'uws') {
  const uWS = require('@trufflesuite/uws-js-unofficial');
  const app = uWS.App();
  app.ws('/*', {
    maxPayloadLength: 64 * 1024,
    maxBackpressure: 4 * 1024 * 1024, // our QUEUE_BYTES
    idleTimeout: 120,
    upgrade: (res, req, context) => {
      res.upgrade({ query: req.getQuery() || '' }, req.getHeader('sec-websocket-key'),
        req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
    },
    open: (ws) => {
      const q = ws.getUserData().query;
      ws.publisher = new URLSearchParams(q).get('publisher') === '1';
      for (const r of rooms(q)) ws.subscribe(r);
    },
    message: (ws, message) => {
      if (!ws.publisher) return;
      const buf = Buffer.from(message);
      const nl = buf.indexOf(10);
      app.publish(buf.subarray(0, nl).toString(), buf.subarray(nl + 1), false);
    },
  });
  app.listen('127.0.0.1', port, (ok) => {
    if (!ok) { console.error('cannot listen'); process.exit(1); }
    console.log('ready');
  });
} else if (kind === 'sio') {
  const { Server } = require('socket.io');
  const io = new Server(port, { transports: ['websocket'], serveClient: false,
    perMessageDeflate: false, maxHttpBufferSize: 64 * 1024, pingInterval: 60000,
    pingTimeout: 60000 });
  io.on('connection', (socket) => {
    const q = socket.handshake.query;
    if (q.publisher === '1') {
      socket.on('pub', (room, ev) => io.to(room).emit('event', ev));
      return;
    }
    for (const r of rooms(new URLSearchParams(q).toString())) socket.join(r);
  });
  console.log('ready');
} else {
  console.error('usage: socket_peers.js uws|sio PORT');
  process.exit(2);
}
