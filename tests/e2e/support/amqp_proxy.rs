//! A TCP proxy in front of RabbitMQ that the test controls: it can *stall*
//! the broker (stop forwarding what clients send, as a broker that stopped
//! reading does) and *block* it (also tell every client
//! `connection.blocked`, as RabbitMQ does during a memory or disk alarm),
//! then let it go again. The machine's RabbitMQ is never touched: only the
//! connections through this proxy see the fault.
//!
//! To inject a frame at a frame boundary, the server-to-client direction is
//! read frame by frame (AMQP 0-9-1: type, channel, size, payload, 0xCE).

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to its connections now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    /// Clients' bytes are held back; nothing is said.
    Stall,
    /// Clients' bytes are held back and every client was sent `connection.blocked`.
    Blocked,
}

/// The proxy; dropping it closes its listener.
pub struct AmqpProxy {
    pub addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl AmqpProxy {
    /// Listens on 127.0.0.1:0 and forwards to `target`.
    pub async fn start(target: SocketAddr) -> AmqpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind amqp proxy");
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(watch::channel(Mode::Forward).0);
        let m = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, m.subscribe()));
            }
        });
        AmqpProxy { addr, mode, task }
    }

    /// `amqp://user:pass@host:port/vhost` pointed at this proxy.
    pub fn url_for(&self, url: &str) -> String {
        super::proxy::with_address(url, self.addr)
    }

    /// Stops forwarding what clients send, silently.
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Sends every client `connection.blocked` and stops forwarding what
    /// they send.
    pub fn block(&self) {
        self.mode.send_replace(Mode::Blocked);
    }

    /// Forwards again (after [`Self::block`], clients are sent
    /// `connection.unblocked` first).
    pub fn release(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}

impl Drop for AmqpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `connection.blocked` (class 10, method 60) with a reason, or
/// `connection.unblocked` (10, 61), as a channel-0 method frame.
fn connection_frame(blocked: bool) -> Vec<u8> {
    let mut payload = vec![0, 10, 0, if blocked { 60 } else { 61 }];
    if blocked {
        let reason = b"low on memory (test alarm)";
        payload.push(reason.len() as u8);
        payload.extend_from_slice(reason);
    }
    let mut frame = vec![1, 0, 0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    frame
}

async fn relay(client: TcpStream, server: TcpStream, mut mode: watch::Receiver<Mode>) {
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let (inject_tx, mut inject_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    // Client → server: held back while stalled or blocked.
    let mut gate = mode.clone();
    let upstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            while *gate.borrow_and_update() != Mode::Forward {
                if gate.changed().await.is_err() {
                    return;
                }
            }
            if server_w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Mode changes become injected frames.
    let announcer = async move {
        let mut last = *mode.borrow_and_update();
        while mode.changed().await.is_ok() {
            let now = *mode.borrow_and_update();
            match (last, now) {
                (_, Mode::Blocked) if last != Mode::Blocked => {
                    let _ = inject_tx.send(connection_frame(true));
                }
                (Mode::Blocked, m) if m != Mode::Blocked => {
                    let _ = inject_tx.send(connection_frame(false));
                }
                _ => {}
            }
            last = now;
        }
    };
    // Server → client, frame by frame (read on their own, so no frame is
    // ever cut), with injected frames in between.
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let reader = async move {
        loop {
            let mut header = [0u8; 7];
            if server_r.read_exact(&mut header).await.is_err() {
                return;
            }
            let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
            let mut frame = header.to_vec();
            frame.resize(7 + size + 1, 0);
            if server_r.read_exact(&mut frame[7..]).await.is_err() || frames_tx.send(frame).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        loop {
            let frame = tokio::select! {
                Some(f) = inject_rx.recv() => f,
                f = frames_rx.recv() => match f { Some(f) => f, None => return },
            };
            if client_w.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = reader => {}
        _ = downstream => {}
        _ = announcer => {}
    }
}
