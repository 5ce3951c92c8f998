//! Several machines ("nodes") in one data-parallel run: one process per node runs that node's
//! replicas, and the nodes sum their replicas' values over TCP through node 0, the
//! coordinator (docs/training.md, "Several machines").
//!
//! Within a node the replicas reduce with burn-collective; between nodes, replica *r* of every
//! node sends its share of its node's sum (`Replica`'s all-reduce splits the sum over the node's
//! replicas) to replica *r* of node 0, which adds them in node order and sends the total back. burn-collective 0.21 has a multi-node mode, but its node synchronisation
//! never clears its list of synchronised peers, so one registration (from `register` to
//! `finish_collective`) can hold only one global all-reduce, and a lost peer panics its
//! server instead of returning an error (docs/deviations.md).
//!
//! Every wait is bounded: a socket read gives up when the peer closes its connection (it
//! stopped or failed), when another replica of this process has failed, or after the group's
//! timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::TrainError;

/// The first bytes of every connection between nodes (the protocol's version included).
const MAGIC: &[u8; 8] = b"FIBERND1";

/// The longest refusal message node 0 sends or a node reads.
const MAX_ANSWER: usize = 4096;

/// How often a waiting read looks at the other replicas and the clock.
const POLL: Duration = Duration::from_millis(50);

/// Where this process sits in a multi-node run (`--nodes`, `--node-rank`, `--coordinator`,
/// with torchrun's meaning of `--nnodes`, `--node-rank` and `--master-addr:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Number of nodes (processes) in the run.
    pub count: usize,
    /// This node, from 0; node 0 is the coordinator and writes the run's files.
    pub rank: usize,
    /// `HOST:PORT` of node 0's listening socket (needed with more than one node).
    pub coordinator: Option<String>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        Self::single()
    }
}

impl NodeSpec {
    /// A run on this machine alone.
    pub fn single() -> Self {
        Self {
            count: 1,
            rank: 0,
            coordinator: None,
        }
    }

    /// Whether the run spans several nodes.
    pub fn is_multi(&self) -> bool {
        self.count > 1
    }

    /// Whether this node writes the run's checkpoints, metrics and reports (node 0).
    pub fn writes(&self) -> bool {
        self.rank == 0
    }

    /// Checks the settings together: a rank below the count, a coordinator `HOST:PORT` when
    /// there is more than one node.
    pub fn validate(&self) -> Result<(), String> {
        if self.count == 0 {
            return Err("--nodes must be at least 1".into());
        }
        if self.rank >= self.count {
            return Err(format!(
                "--node-rank {} is not below --nodes {}",
                self.rank, self.count
            ));
        }
        if self.is_multi() {
            let coordinator = self.coordinator.as_deref().ok_or_else(|| {
                format!(
                    "--nodes {} needs --coordinator HOST:PORT (node 0's address, the same on every node)",
                    self.count
                )
            })?;
            port_of(coordinator)?;
        }
        Ok(())
    }
}

fn port_of(address: &str) -> Result<u16, String> {
    address
        .rsplit_once(':')
        .and_then(|(host, port)| (!host.is_empty()).then_some(port))
        .and_then(|port| port.parse::<u16>().ok())
        .ok_or_else(|| format!("--coordinator `{address}` is not HOST:PORT"))
}

/// A stable 64-bit FNV-1a hash (the same on every machine and build), for fingerprints.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One local replica's connections: node 0 holds one stream per other node (in node order),
/// every other node one stream to node 0.
enum Channel {
    Hub(Vec<TcpStream>),
    Spoke(TcpStream),
}

/// The connections of this node to the others, one channel per local replica.
pub struct NodeLink {
    spec: NodeSpec,
    local_replicas: usize,
    timeout: Duration,
    channels: Vec<Mutex<Channel>>,
}

/// What a spoke announces when it connects: who it is and what it runs.
struct Hello {
    node_rank: u32,
    local_rank: u32,
    nodes: u32,
    local_replicas: u32,
    fingerprint: u64,
}

impl Hello {
    fn bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for v in [
            self.node_rank,
            self.local_rank,
            self.nodes,
            self.local_replicas,
        ] {
            out.extend(v.to_le_bytes());
        }
        out.extend(self.fingerprint.to_le_bytes());
        out
    }

    fn parse(bytes: &[u8; 32]) -> Option<Self> {
        if &bytes[..8] != MAGIC {
            return None;
        }
        let word = |i: usize| u32::from_le_bytes(bytes[8 + 4 * i..12 + 4 * i].try_into().unwrap());
        Some(Self {
            node_rank: word(0),
            local_rank: word(1),
            nodes: word(2),
            local_replicas: word(3),
            fingerprint: u64::from_le_bytes(bytes[24..32].try_into().unwrap()),
        })
    }
}

fn node_error(message: impl Into<String>) -> TrainError {
    TrainError::Replica(message.into())
}

impl NodeLink {
    /// Joins the nodes of `spec`: node 0 listens on the coordinator's port and accepts one
    /// connection per local replica of every other node; the others connect to it (retrying
    /// until node 0 listens). Every node must run `local_replicas` replicas and the same
    /// configuration (`fingerprint`); a node that differs is refused with both values named.
    /// Gives up after `timeout`.
    pub fn join(
        spec: &NodeSpec,
        local_replicas: usize,
        fingerprint: u64,
        timeout: Duration,
    ) -> Result<Arc<Self>, TrainError> {
        spec.validate().map_err(TrainError::Setting)?;
        let coordinator = spec.coordinator.clone().unwrap_or_default();
        let deadline = Instant::now() + timeout;
        let channels = if spec.rank == 0 {
            Self::accept(spec, &coordinator, local_replicas, fingerprint, deadline)?
        } else {
            // Every channel greets first: node 0 answers only when all have arrived.
            let mut streams = (0..local_replicas)
                .map(|local_rank| {
                    Self::connect(
                        spec,
                        &coordinator,
                        local_rank,
                        local_replicas,
                        fingerprint,
                        deadline,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            for stream in &mut streams {
                Self::answer(spec, stream, deadline)?;
            }
            streams.into_iter().map(Channel::Spoke).collect()
        };
        Ok(Arc::new(Self {
            spec: spec.clone(),
            local_replicas,
            timeout,
            channels: channels.into_iter().map(Mutex::new).collect(),
        }))
    }

    fn accept(
        spec: &NodeSpec,
        coordinator: &str,
        local_replicas: usize,
        fingerprint: u64,
        deadline: Instant,
    ) -> Result<Vec<Channel>, TrainError> {
        let port = port_of(coordinator).map_err(TrainError::Setting)?;
        let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
            node_error(format!(
                "node 0 cannot listen on port {port} (--coordinator {coordinator}): {e}"
            ))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| node_error(format!("node 0: {e}")))?;
        let expected = (spec.count - 1) * local_replicas;
        let mut slots: Vec<Vec<Option<TcpStream>>> = (0..local_replicas)
            .map(|_| (1..spec.count).map(|_| None).collect())
            .collect();
        let mut accepted = 0;
        println!(
            "node 0 of {}: waiting on port {port} for {expected} connection(s) from the other nodes",
            spec.count
        );
        while accepted < expected {
            let (mut stream, from) = match listener.accept() {
                Ok(connection) => connection,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(node_error(format!(
                            "node 0 waited for the other nodes until the `[replicas]` timeout; {accepted} of {expected} connection(s) arrived"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => return Err(node_error(format!("node 0: accepting a node: {e}"))),
            };
            prepare(&stream)?;
            let mut hello = [0u8; 32];
            read_bounded(
                &mut stream,
                &mut hello,
                deadline,
                &|| None,
                "a node's greeting",
            )?;
            let refuse = |stream: &mut TcpStream, message: String| {
                let _ = reply(stream, Some(&message), deadline);
                node_error(format!("node 0 refused the node at {from}: {message}"))
            };
            let Some(hello) = Hello::parse(&hello) else {
                return Err(refuse(&mut stream, "it is not a fiber node".into()));
            };
            let problem = if hello.nodes as usize != spec.count {
                Some(format!(
                    "it runs with --nodes {}, node 0 with --nodes {}",
                    hello.nodes, spec.count
                ))
            } else if hello.local_replicas as usize != local_replicas {
                Some(format!(
                    "it runs {} replica(s) (--devices), node 0 runs {local_replicas}; every node needs the same number",
                    hello.local_replicas
                ))
            } else if hello.fingerprint != fingerprint {
                Some(format!(
                    "its configuration differs from node 0's (fingerprint {:016x} against {fingerprint:016x}): every node needs the same configuration and options",
                    hello.fingerprint
                ))
            } else if hello.node_rank == 0
                || hello.node_rank as usize >= spec.count
                || hello.local_rank as usize >= local_replicas
            {
                Some(format!(
                    "it calls itself replica {} of node {}",
                    hello.local_rank, hello.node_rank
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(refuse(&mut stream, problem));
            }
            let slot = &mut slots[hello.local_rank as usize][hello.node_rank as usize - 1];
            if slot.is_some() {
                return Err(refuse(
                    &mut stream,
                    format!(
                        "node {} connected twice (two nodes with the same --node-rank?)",
                        hello.node_rank
                    ),
                ));
            }
            *slot = Some(stream);
            accepted += 1;
        }
        let mut channels = Vec::with_capacity(local_replicas);
        for streams in slots {
            let mut streams: Vec<TcpStream> = streams.into_iter().flatten().collect();
            for stream in &mut streams {
                reply(stream, None, deadline)?;
            }
            channels.push(Channel::Hub(streams));
        }
        println!("node 0: all {} nodes joined", spec.count);
        Ok(channels)
    }

    fn connect(
        spec: &NodeSpec,
        coordinator: &str,
        local_rank: usize,
        local_replicas: usize,
        fingerprint: u64,
        deadline: Instant,
    ) -> Result<TcpStream, TrainError> {
        let addresses: Vec<SocketAddr> = coordinator
            .to_socket_addrs()
            .map_err(|e| {
                node_error(format!(
                    "node {}: cannot resolve --coordinator {coordinator}: {e}",
                    spec.rank
                ))
            })?
            .collect();
        let mut stream = loop {
            // A connection to a local port nobody listens on can, rarely, be the socket
            // connected to itself; it is dropped and tried again.
            if let Some(stream) = addresses.iter().find_map(|a| {
                TcpStream::connect_timeout(a, Duration::from_secs(2))
                    .ok()
                    .filter(|s| s.local_addr().ok() != s.peer_addr().ok())
            }) {
                break stream;
            }
            if Instant::now() >= deadline {
                return Err(node_error(format!(
                    "node {} could not reach node 0 at {coordinator} before the `[replicas]` timeout",
                    spec.rank
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        prepare(&stream)?;
        let hello = Hello {
            node_rank: spec.rank as u32,
            local_rank: local_rank as u32,
            nodes: spec.count as u32,
            local_replicas: local_replicas as u32,
            fingerprint,
        };
        write_bounded(
            &mut stream,
            &hello.bytes(),
            deadline,
            &|| None,
            "the greeting",
        )?;
        Ok(stream)
    }

    /// Reads node 0's answer to a greeting: accepted, or refused with its reason.
    fn answer(
        spec: &NodeSpec,
        stream: &mut TcpStream,
        deadline: Instant,
    ) -> Result<(), TrainError> {
        let mut status = [0u8; 13];
        read_bounded(stream, &mut status, deadline, &|| None, "node 0's answer")?;
        let length = u32::from_le_bytes(status[9..13].try_into().unwrap()) as usize;
        if &status[..8] != MAGIC || length > MAX_ANSWER {
            return Err(node_error(format!(
                "node {}: what answered at --coordinator is not node 0 of a fiber run",
                spec.rank
            )));
        }
        let mut message = vec![0u8; length];
        read_bounded(stream, &mut message, deadline, &|| None, "node 0's answer")?;
        if status[8] != 0 {
            return Err(node_error(format!(
                "node 0 refused node {}: {}",
                spec.rank,
                String::from_utf8_lossy(&message)
            )));
        }
        Ok(())
    }

    /// This node's place in the run.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Replicas on each node.
    pub fn local_replicas(&self) -> usize {
        self.local_replicas
    }

    /// Checks that every node holds the same `value` for `what` (e.g. a fingerprint of the
    /// tokenizer), through local replica 0's channel; a difference is an error on every node
    /// naming the nodes that differ from node 0.
    pub fn check_same(&self, what: &str, value: u64) -> Result<(), TrainError> {
        let nodes = self.spec.count;
        let mut slots = vec![0f32; nodes * 8];
        for (p, slot) in slots[self.spec.rank * 8..(self.spec.rank + 1) * 8]
            .iter_mut()
            .enumerate()
        {
            *slot = ((value >> (8 * (7 - p))) & 0xFF) as f32;
        }
        self.all_reduce_sum(0, &mut slots, what, &|| None)?;
        let values: Vec<u64> = slots
            .chunks(8)
            .map(|c| c.iter().fold(0u64, |v, b| (v << 8) | *b as u64))
            .collect();
        let differ: Vec<String> = (1..nodes)
            .filter(|&n| values[n] != values[0])
            .map(|n| n.to_string())
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(node_error(format!(
            "node(s) {} hold another {what} than node 0: every node needs the same data, --init and --tokenizer",
            differ.join(", ")
        )))
    }

    /// Sums `values` element-wise over the nodes for local replica `local_rank` (every node's
    /// replica of that rank calls it with as many values, for the same `what`): node 0 adds the
    /// nodes' values in node order and sends the total back. `abandon` names another local
    /// replica's failure, which ends the wait.
    pub fn all_reduce_sum(
        &self,
        local_rank: usize,
        values: &mut [f32],
        what: &str,
        abandon: &dyn Fn() -> Option<String>,
    ) -> Result<(), TrainError> {
        let mut channel = self.channels[local_rank]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + self.timeout;
        let tag = fingerprint(what.as_bytes());
        match &mut *channel {
            Channel::Hub(streams) => {
                let mut incoming = vec![0f32; values.len()];
                for (index, stream) in streams.iter_mut().enumerate() {
                    let node = index + 1;
                    read_frame(stream, tag, &mut incoming, deadline, abandon, node, what)?;
                    for (total, v) in values.iter_mut().zip(&incoming) {
                        *total += v;
                    }
                }
                let frame = frame(tag, values);
                for (index, stream) in streams.iter_mut().enumerate() {
                    write_bounded(stream, &frame, deadline, abandon, what)
                        .map_err(|e| name_node(e, index + 1))?;
                }
            }
            Channel::Spoke(stream) => {
                write_bounded(stream, &frame(tag, values), deadline, abandon, what)
                    .map_err(|e| name_node(e, 0))?;
                read_frame(stream, tag, values, deadline, abandon, 0, what)?;
            }
        }
        Ok(())
    }
}

fn prepare(stream: &TcpStream) -> Result<(), TrainError> {
    let configure = || -> std::io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(POLL))
    };
    configure().map_err(|e| node_error(format!("setting up a node connection: {e}")))
}

/// Node 0's answer to a greeting: accepted, or refused with a reason.
fn reply(
    stream: &mut TcpStream,
    refusal: Option<&str>,
    deadline: Instant,
) -> Result<(), TrainError> {
    let message =
        &refusal.unwrap_or("").as_bytes()[..refusal.map_or(0, |r| r.len().min(MAX_ANSWER))];
    let mut bytes = MAGIC.to_vec();
    bytes.push(refusal.is_some() as u8);
    bytes.extend((message.len() as u32).to_le_bytes());
    bytes.extend(message);
    write_bounded(stream, &bytes, deadline, &|| None, "the answer to a node")
}

/// Sends `bytes` in short slices (see [`transfer`]).
fn write_bounded(
    stream: &mut TcpStream,
    bytes: &[u8],
    deadline: Instant,
    abandon: &dyn Fn() -> Option<String>,
    what: &str,
) -> Result<(), TrainError> {
    transfer(
        bytes.len(),
        |done| stream.write(&bytes[done..]),
        deadline,
        abandon,
        what,
    )
}

/// `[tag u64][count u64][count × f32]`, little-endian.
fn frame(tag: u64, values: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + 4 * values.len());
    bytes.extend(tag.to_le_bytes());
    bytes.extend((values.len() as u64).to_le_bytes());
    for v in values {
        bytes.extend(v.to_le_bytes());
    }
    bytes
}

fn read_frame(
    stream: &mut TcpStream,
    tag: u64,
    values: &mut [f32],
    deadline: Instant,
    abandon: &dyn Fn() -> Option<String>,
    node: usize,
    what: &str,
) -> Result<(), TrainError> {
    let mut header = [0u8; 16];
    read_bounded(stream, &mut header, deadline, abandon, what).map_err(|e| name_node(e, node))?;
    let their_tag = u64::from_le_bytes(header[..8].try_into().unwrap());
    let count = u64::from_le_bytes(header[8..].try_into().unwrap()) as usize;
    if their_tag != tag || count != values.len() {
        return Err(node_error(format!(
            "node {node} is at a different synchronisation point than {what} ({count} values against {}): the nodes run different code or settings",
            values.len()
        )));
    }
    let mut payload = vec![0u8; 4 * count];
    read_bounded(stream, &mut payload, deadline, abandon, what).map_err(|e| name_node(e, node))?;
    for (v, bytes) in values.iter_mut().zip(payload.chunks_exact(4)) {
        *v = f32::from_le_bytes(bytes.try_into().unwrap());
    }
    Ok(())
}

fn name_node(error: TrainError, node: usize) -> TrainError {
    match error {
        TrainError::Replica(message) => TrainError::Replica(format!("node {node}: {message}")),
        other => other,
    }
}

/// Fills `buf` from `stream` in short slices (see [`transfer`]).
fn read_bounded(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    abandon: &dyn Fn() -> Option<String>,
    what: &str,
) -> Result<(), TrainError> {
    let len = buf.len();
    transfer(
        len,
        |done| stream.read(&mut buf[done..]),
        deadline,
        abandon,
        what,
    )
}

/// Moves `len` bytes through `step(done)`, a read or a write at offset `done` that returns how
/// many bytes it moved and times out after [`POLL`]: gives up when the connection closes or
/// fails (the other node stopped), when `abandon` names a failure, or at `deadline`.
fn transfer(
    len: usize,
    mut step: impl FnMut(usize) -> std::io::Result<usize>,
    deadline: Instant,
    abandon: &dyn Fn() -> Option<String>,
    what: &str,
) -> Result<(), TrainError> {
    let mut done = 0;
    while done < len {
        match step(done) {
            Ok(0) => {
                return Err(node_error(format!(
                    "the connection closed during {what}: that node stopped or failed (see its output)"
                )))
            }
            Ok(n) => done += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if let Some(failure) = abandon() {
                    return Err(node_error(format!("{failure}; stopped waiting at {what}")));
                }
                if Instant::now() >= deadline {
                    return Err(node_error(format!(
                        "waited for the other nodes at {what} until the `[replicas]` timeout; one of them stopped or hangs"
                    )));
                }
            }
            Err(e) => {
                return Err(node_error(format!(
                    "the connection failed during {what} ({e}): that node stopped or failed (see its output)"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn spec(rank: usize, port: u16) -> NodeSpec {
        NodeSpec {
            count: 3,
            rank,
            coordinator: Some(format!("127.0.0.1:{port}")),
        }
    }

    #[test]
    fn three_nodes_sum_in_node_order_and_a_lost_node_is_an_error_not_a_hang() {
        let port = free_port();
        let timeout = Duration::from_secs(30);
        let nodes: Vec<_> = (0..3)
            .map(|rank| {
                std::thread::spawn(move || {
                    let link = NodeLink::join(&spec(rank, port), 2, 7, timeout).unwrap();
                    let mut sums = Vec::new();
                    for local in 0..2 {
                        let mut values = vec![rank as f32 + 1.0, 10.0 * local as f32];
                        link.all_reduce_sum(local, &mut values, "a test", &|| None)
                            .unwrap();
                        sums.push(values);
                    }
                    (link, sums)
                })
            })
            .collect();
        let mut links = Vec::new();
        for node in nodes {
            let (link, sums) = node.join().unwrap();
            assert_eq!(sums, vec![vec![6.0, 0.0], vec![6.0, 30.0]]);
            links.push(link);
        }
        // Node 2 goes away: node 0 and node 1 get errors naming what happened.
        links.pop();
        let (node1, node0) = (links.pop().unwrap(), links.pop().unwrap());
        let waiting = std::thread::spawn(move || {
            let mut values = vec![1.0];
            node1.all_reduce_sum(0, &mut values, "the next step", &|| None)
        });
        let mut values = vec![1.0];
        let error = node0
            .all_reduce_sum(0, &mut values, "the next step", &|| None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("node 2"), "{error}");
        assert!(error.contains("stopped or failed"), "{error}");
        drop(node0);
        let error = waiting.join().unwrap().unwrap_err().to_string();
        assert!(error.contains("node 0"), "{error}");
    }

    #[test]
    fn a_node_with_other_settings_is_refused_with_both_values() {
        let port = free_port();
        let timeout = Duration::from_secs(30);
        let two = move |rank| NodeSpec {
            count: 2,
            rank,
            coordinator: Some(format!("127.0.0.1:{port}")),
        };
        let hub = std::thread::spawn(move || NodeLink::join(&two(0), 1, 1, timeout).map(|_| ()));
        let spoke = NodeLink::join(&two(1), 1, 2, timeout).map(|_| ());
        let (hub, spoke) = (hub.join().unwrap().unwrap_err(), spoke.unwrap_err());
        assert!(hub.to_string().contains("configuration differs"), "{hub}");
        assert!(
            spoke.to_string().contains("configuration differs"),
            "{spoke}"
        );
        assert!(NodeSpec {
            count: 2,
            rank: 0,
            coordinator: None
        }
        .validate()
        .unwrap_err()
        .contains("--coordinator"));
        assert!(NodeSpec {
            count: 2,
            rank: 2,
            coordinator: Some("h:1".into())
        }
        .validate()
        .is_err());
    }
}
