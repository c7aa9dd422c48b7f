//! A TCP proxy the test controls, and the addresses it stands in for.

/// A TCP proxy in the test process that can cut every connection and refuse
/// new ones for a while: a database that becomes unreachable, then returns.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1:0 and forwards to `target`.
    pub async fn start(target: std::net::SocketAddr) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let (d, c) = (down.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let mut cut = c.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        TcpProxy {
            addr,
            down,
            cuts,
            task,
        }
    }

    /// Cuts every open connection and refuses new ones until [`Self::resume`].
    pub fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn resume(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// `url` (`scheme://user@host:port/db…`) pointed at this proxy.
    pub fn url_for(&self, url: &str) -> String {
        with_address(url, self.addr)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// `url` (`scheme://[user@]host:port/…`) with `host:port` replaced by `addr`.
pub fn with_address(url: &str, addr: std::net::SocketAddr) -> String {
    let start = url
        .rfind('@')
        .map(|i| i + 1)
        .unwrap_or(url.find("://").unwrap() + 3);
    let end = url[start..].find('/').map(|i| start + i).unwrap_or(url.len());
    format!("{}{}{}", &url[..start], addr, &url[end..])
}

/// The host:port a database URL points at.
pub fn db_addr(url: &str) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let start = url
        .rfind('@')
        .map(|i| i + 1)
        .unwrap_or(url.find("://").unwrap() + 3);
    let end = url[start..].find('/').map(|i| start + i).unwrap_or(url.len());
    url[start..end]
        .replace("localhost", "127.0.0.1")
        .to_socket_addrs()
        .expect("database address")
        .next()
        .unwrap()
}
