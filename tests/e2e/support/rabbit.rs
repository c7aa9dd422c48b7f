//! RabbitMQ as its operator sees it (`rabbitmqctl`): closing one
//! deployment's connections, as a broker restart would.

use tokio::process::Command;

/// Closes, from the RabbitMQ side, the connections whose name starts with
/// `<prefix>-` and ends with one of `roles` (`publish`, `consume`): only this
/// deployment's, never other tests'. Returns how many were closed.
pub async fn close_rabbit_connections(prefix: &str, roles: &[&str]) -> usize {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "-q",
            "--no-table-headers",
        ])
        .output()
        .await
        .expect("rabbitmqctl list_connections");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = 0;
    for line in text.lines() {
        let Some((pid, props)) = line.split_once('\t') else {
            continue;
        };
        let wanted = roles
            .iter()
            .any(|r| props.contains(&format!("{{\"connection_name\",\"{prefix}-{r}\"}}")));
        if wanted {
            let st = Command::new("rabbitmqctl")
                .args(["close_connection", pid.trim(), "fault test"])
                .output()
                .await
                .expect("rabbitmqctl close_connection");
            if st.status.success() {
                closed += 1;
            }
        }
    }
    closed
}
