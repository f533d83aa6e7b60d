//! The flow table driven by a real watch session on the test's own cgroup:
//! a transfer of known size, and 100,000 real loopback connections after
//! which the table is back to its baseline.

mod common;

use common::*;
use sockfilter::model::flow::{Change, Direction, FlowState, FlowTable, FlowUpdate};
use sockfilter::session::{EventStream, Session};
use sockfilter::watch::Item;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Applies events, handing each one's updates to `step`, until `step` says
/// it is done; bounded by `limit`. Resynchronises
/// the table with sock_diag if the kernel dropped events. Returns the
/// number of events the kernel dropped.
async fn drive(
    stream: &mut EventStream,
    table: &mut FlowTable,
    limit: Duration,
    mut step: impl FnMut(&FlowTable, Vec<FlowUpdate>) -> bool,
) -> u64 {
    let deadline = Instant::now() + limit;
    let mut lost = 0;
    while !step(table, Vec::new()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, stream.next())
            .await
            .unwrap_or_else(|_| panic!("not done within {limit:?}; {} live flows", table.len()));
        match item.expect("the stream ended") {
            Item::Lost(n) => {
                lost += n;
                let live: HashSet<u64> = sockfilter::diag::sockets_all_namespaces()
                    .unwrap()
                    .iter()
                    .map(|s| s.cookie)
                    .collect();
                table.retain(|f| live.contains(&f.id));
            }
            Item::Event(e) => {
                let updates = table.apply(&e);
                if step(table, updates) {
                    break;
                }
            }
        }
    }
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_established_closed_with_exact_bytes() {
    let cg = TestCgroup::new("flow-life");
    let mut stream = Session::new()
        .cgroup(&cg.path)
        .existing(false)
        .start()
        .expect("start the session");
    let mut p = python(
        &cg,
        None,
        r#"
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
c.sendall(b"x" * 100000)
got = 0
while got < 100000: got += len(a.recv(65536))
a.sendall(b"y" * 1234)
got = 0
while got < 1234: got += len(c.recv(65536))
print(s.getsockname()[1], c.getsockname()[1])
c.close(); a.close(); s.close()
sys.stdin.readline()
"#,
    );
    let line = tokio::task::block_in_place(|| p.line());
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (port, cport) = (ports[0], ports[1]);
    let mut table = FlowTable::new();
    let mut updates: Vec<FlowUpdate> = Vec::new();
    let lost = drive(
        &mut stream,
        &mut table,
        WAIT,
        // Until three flows opened and closed again.
        |t, new| {
            updates.extend(new);
            t.is_empty()
                && updates
                    .iter()
                    .filter(|u| u.change == Change::Closed)
                    .count()
                    == 3
        },
    )
    .await;
    assert_eq!(lost, 0);
    let history = |pred: &dyn Fn(&FlowUpdate) -> bool| -> Vec<(Change, FlowState)> {
        let id = updates.iter().find(|u| pred(u)).expect("a flow").flow.id;
        updates
            .iter()
            .filter(|u| u.flow.id == id)
            .map(|u| (u.change, u.flow.state))
            .collect()
    };
    use Change::{Changed, Opened};
    use FlowState::{Connecting, Established, Listening};
    let listener = history(&|u| u.flow.state == Listening);
    assert_eq!(
        listener,
        [(Opened, Listening), (Change::Closed, FlowState::Closed)]
    );
    let client = history(&|u| u.flow.direction == Direction::Outbound);
    assert_eq!(
        client,
        [
            (Opened, Connecting),
            (Changed, Established),
            (Change::Closed, FlowState::Closed)
        ]
    );
    let server = history(&|u| u.flow.listener.is_some());
    assert_eq!(
        server,
        [(Opened, Established), (Change::Closed, FlowState::Closed)]
    );

    let closed = |pred: &dyn Fn(&FlowUpdate) -> bool| {
        updates
            .iter()
            .find(|u| u.change == Change::Closed && pred(u))
            .unwrap()
            .flow
            .clone()
    };
    let c = closed(&|u| u.flow.direction == Direction::Outbound);
    assert_eq!((c.bytes_sent, c.bytes_received), (Some(100000), Some(1234)));
    assert_eq!(
        (c.local.port, c.remote.map(|r| r.port)),
        (cport, Some(port))
    );
    assert_eq!(c.owner.as_ref().map(|o| o.pid), Some(p.pid()));
    assert!(c.ended.unwrap() >= c.started);
    let a = closed(&|u| u.flow.listener.is_some());
    assert_eq!((a.bytes_sent, a.bytes_received), (Some(1234), Some(100000)));
    let l = closed(&|u| u.flow.remote.is_none());
    assert_eq!(a.listener, Some(l.id));
    assert_eq!((l.local.port, l.direction), (port, Direction::Inbound));
}

/// 100,000 real loopback connections (connect, accept, close on both ends)
/// through a live session: every flow opened is closed and released, and the
/// table returns to its baseline (the listener) — counted, not timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_connections_return_to_baseline() {
    const N: usize = 100_000;
    let cg = TestCgroup::new("flow-100k");
    let ns = TestNetns::new("flow100k");
    let mut p = python(
        &cg,
        Some(&ns),
        &format!(
            r#"
import socket, struct, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(128)
addr = s.getsockname()
print(addr[1])
sys.stdin.readline()
linger = struct.pack("ii", 1, 0)
for i in range({N}):
    c = socket.socket()
    # Reset instead of TIME_WAIT, so 100,000 connections do not exhaust ports.
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    c.connect(addr)
    a, _ = s.accept()
    c.close(); a.close()
print("done")
sys.stdin.readline()
"#
        ),
    );
    let _port: u16 = tokio::task::block_in_place(|| p.line()).parse().unwrap();
    let mut stream = Session::new()
        .cgroup(&cg.path)
        .existing(true)
        .start()
        .expect("start the session");
    let mut table = FlowTable::new();
    // Baseline: the listener, from the snapshot.
    drive(&mut stream, &mut table, WAIT, |t, _| t.len() == 1).await;
    let baseline = table.len();
    assert_eq!(table.iter().next().unwrap().state, FlowState::Listening);
    tokio::task::block_in_place(|| p.send("go"));
    let started = Instant::now();
    let (mut opened, mut closed) = (0usize, 0usize);
    let lost = drive(
        &mut stream,
        &mut table,
        Duration::from_secs(300),
        |_, new| {
            for u in new {
                match u.change {
                    Change::Opened => opened += 1,
                    Change::Closed => closed += 1,
                    Change::Changed => {}
                }
            }
            closed == 2 * N
        },
    )
    .await;
    let took = started.elapsed();
    eprintln!(
        "{N} connections: {opened} flows opened, {closed} closed, {lost} events lost, {:?}, {} live",
        took,
        table.len()
    );
    assert_eq!(lost, 0, "the kernel dropped events");
    assert_eq!(opened, 2 * N);
    assert_eq!(table.len(), baseline, "live entries back to the baseline");
    assert_eq!(tokio::task::block_in_place(|| p.line()), "done");
}
