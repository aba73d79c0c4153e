// A bittorrent-dht node (WebTorrent's BEP 5 implementation) driven by
// hyperdrive/discovery's interoperability test.
//
// Usage: node node.mjs BOOTSTRAP_HOST:PORT [LISTEN_HOST]
//
// It listens on LISTEN_HOST (default 127.0.0.1), an ephemeral port, joins
// the DHT through BOOTSTRAP_HOST:PORT only, and then reads commands from
// stdin, one JSON object a line:
//
//	{"cmd": "lookup", "id": "<40 hex>"}
//	{"cmd": "announce", "id": "<40 hex>", "port": 1234}   (port 0: implied)
//
// It writes events to stdout, one JSON object a line: ready (with its port),
// lookup (the peers found, each with the node that gave it, or null when it
// came from this node's own store), announced, announce_peer (an announce it
// received), warning and error. It exits when stdin closes.
import DHT from 'bittorrent-dht'
import readline from 'node:readline'

const [bootstrap, host = '127.0.0.1'] = process.argv.slice(2)
if (!bootstrap) {
  process.stderr.write('usage: node node.mjs BOOTSTRAP_HOST:PORT [LISTEN_HOST]\n')
  process.exit(2)
}

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const dht = new DHT({ bootstrap: [bootstrap] })

dht.on('error', (err) => {
  out({ event: 'error', error: String(err) })
  process.exit(1)
})
dht.on('warning', (err) => out({ event: 'warning', error: String(err) }))
dht.on('announce_peer', (infoHash, peer) => {
  out({ event: 'announce_peer', id: infoHash.toString('hex'), host: peer.host, port: peer.port })
})
dht.on('ready', () => {
  out({ event: 'ready', port: dht.address().port, nodes: dht.toJSON().nodes.length })
})
dht.listen(0, host)

function lookup (id) {
  const peers = []
  const onPeer = (peer, infoHash, from) => {
    if (infoHash.toString('hex') !== id) return
    peers.push({ host: peer.host, port: peer.port, from: from ? `${from.address}:${from.port}` : null })
  }
  dht.on('peer', onPeer)
  dht.lookup(id, (err, nodes) => {
    // Peers from the node's own store are emitted on the next tick.
    setImmediate(() => {
      dht.removeListener('peer', onPeer)
      out({ event: 'lookup', id, peers, nodes, error: err ? String(err) : null })
    })
  })
}

function announce (id, port) {
  dht.announce(id, port, (err) => {
    out({ event: 'announced', id, port, error: err ? String(err) : null })
  })
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (!line.trim()) return
  let c
  try {
    c = JSON.parse(line)
  } catch (err) {
    out({ event: 'error', error: `bad command ${line}: ${err}` })
    return
  }
  switch (c.cmd) {
    case 'lookup': lookup(c.id); break
    case 'announce': announce(c.id, c.port || 0); break
    default: out({ event: 'error', error: `unknown command ${c.cmd}` })
  }
})
rl.on('close', () => dht.destroy(() => process.exit(0)))
