// Drives the npm dns-discovery package (v6) for hyperdrive/discovery's
// interop tests (dns_test.go). It reads one JSON command a line on stdin
// and writes one JSON line on stdout per reply ({"seq": n, ...}) and per
// event ({"event": "peer", ...}). Multicast is off everywhere: the tests
// talk to discovery servers on 127.0.0.1 only.
//
//   node peer.js --domain dat.local
//
// Commands ({"seq": n, "op": ...}):
//   server                               start a server on a random port → {port}
//   client {name, server}                a client of "host:port" → {port} (its socket's)
//   announce {name, id, port, implied}   → {} once answered
//   unannounce {name, id, port}          → {}
//   lookup {name, id}                    → {} (peers arrive as events)
//   whoami {name}                        → {host, port}
//   close                                destroy everything and exit
'use strict'

const dgram = require('dgram')
const readline = require('readline')
const discovery = require('dns-discovery')

const argv = process.argv.slice(2)
const domain = argv[argv.indexOf('--domain') + 1] || 'dat.local'
const instances = new Map()

function out (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function watch (name, disc) {
  disc.on('peer', (id, peer) => out({ event: 'peer', name, id, host: peer.host, port: peer.port }))
  disc.on('error', (err) => out({ event: 'error', name, error: String(err) }))
}

function reply (seq) {
  return (err, data) => out(Object.assign({ seq }, data || {}, err ? { error: String(err.message || err) } : {}))
}

const handlers = {
  server (cmd, done) {
    const disc = discovery({ multicast: false, domain })
    watch('server', disc)
    instances.set('server', disc)
    // An array, since listen(0) would mean the default ports 53 and 5300.
    disc.listen([0], () => done(null, { port: disc._sockets[1].address().port }))
  },
  client (cmd, done) {
    // A socket bound now, so that its port (the implied one) is known.
    const socket = dgram.createSocket('udp4')
    socket.bind(0, '127.0.0.1', () => {
      const disc = discovery({ multicast: false, domain, server: cmd.server, socket })
      watch(cmd.name, disc)
      instances.set(cmd.name, disc)
      done(null, { port: socket.address().port })
    })
  },
  announce (cmd, done) {
    const opts = cmd.implied ? { impliedPort: true } : {}
    instances.get(cmd.name).announce(cmd.id, cmd.port, opts, (err) => done(err))
  },
  unannounce (cmd, done) {
    instances.get(cmd.name).unannounce(cmd.id, cmd.port, (err) => done(err))
  },
  lookup (cmd, done) {
    instances.get(cmd.name).lookup(cmd.id, (err) => done(err))
  },
  whoami (cmd, done) {
    instances.get(cmd.name).whoami((err, me) => done(err, me))
  },
  close (cmd, done) {
    let missing = instances.size + 1
    const next = () => {
      if (--missing) return
      done(null)
      process.exit(0)
    }
    for (const disc of instances.values()) disc.destroy(next)
    next()
  }
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    out({ event: 'error', error: 'bad command: ' + line })
    return
  }
  const h = handlers[cmd.op]
  if (!h) return reply(cmd.seq)(new Error('unknown op ' + cmd.op))
  try {
    h(cmd, reply(cmd.seq))
  } catch (err) {
    reply(cmd.seq)(err)
  }
}).on('close', () => process.exit(0))
