//! `rdmaft recv --metrics ADDR:PORT`: the receiver's counters as Prometheus metrics
//! (OpenMetrics text, `prometheus-client`), served over HTTP (`tiny_http`) at any path.
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `rdmaft_recv_connections_active` | gauge | connections being served |
//! | `rdmaft_recv_connections_total` | counter | connections admitted past the allow-list and limits into their handshake (each lane counts; one that then fails its handshake is a refusal too) |
//! | `rdmaft_recv_bytes_total` | counter | file data written (as it arrives) |
//! | `rdmaft_recv_files_total{outcome}` | counter | entries ended: `received`, `up_to_date`, `failed`, `refused`, `unfinished`, `dry_run` |
//! | `rdmaft_recv_file_failures_total{reason}` | counter | entries that failed or were refused, by status (`DIGEST_MISMATCH`, `EXISTS`, ...) |
//! | `rdmaft_recv_refusals_total{reason}` | counter | connections refused before their session (`NOT_ALLOWED`, `NO_RESOURCES`, `HANDSHAKE_FAILED`, ...) |
//! | `rdmaft_recv_registered_memory_bytes` | gauge | memory registered with RDMA devices (rings and buffers) |
//!
//! Counters that the receiver keeps itself (connections, bytes) are sampled into these at
//! most every 200 ms (the main loop's tick) and at every scrape's nearest tick.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rdmaft::{ConnectionReport, ReceivedFile, ReceivedOutcome, ReceiverStats};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

type Labels = Vec<(&'static str, String)>;

/// The metrics, updated from the receiver's callbacks and its stats.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    active: Gauge,
    connections: Counter,
    bytes: Counter,
    files: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    registered: Gauge,
    /// The receiver's own counts at the last sample (counters only move by differences).
    seen: Arc<(AtomicU64, AtomicU64)>,
}

impl Metrics {
    fn registry(&self) -> Registry {
        let mut r = Registry::default();
        r.register(
            "rdmaft_recv_connections_active",
            "Connections being served",
            self.active.clone(),
        );
        r.register(
            "rdmaft_recv_connections",
            "Connections admitted (each lane counts)",
            self.connections.clone(),
        );
        r.register(
            "rdmaft_recv_bytes",
            "File data written, as it arrives",
            self.bytes.clone(),
        );
        r.register(
            "rdmaft_recv_files",
            "Entries ended, by outcome",
            self.files.clone(),
        );
        r.register(
            "rdmaft_recv_file_failures",
            "Entries failed or refused, by reason",
            self.failures.clone(),
        );
        r.register(
            "rdmaft_recv_refusals",
            "Connections refused before their session, by reason",
            self.refusals.clone(),
        );
        r.register(
            "rdmaft_recv_registered_memory_bytes",
            "Memory registered with RDMA devices",
            self.registered.clone(),
        );
        r
    }

    /// Takes in the receiver's own counters.
    pub fn sample(&self, stats: ReceiverStats) {
        self.active.set(stats.active as i64);
        self.registered
            .set(i64::try_from(stats.registered_bytes).unwrap_or(i64::MAX));
        let (connections, bytes) = &*self.seen;
        let before = connections.swap(stats.admitted, Ordering::Relaxed);
        self.connections
            .inc_by(stats.admitted.saturating_sub(before));
        let before = bytes.swap(stats.bytes_written, Ordering::Relaxed);
        self.bytes
            .inc_by(stats.bytes_written.saturating_sub(before));
    }

    /// Counts an entry's outcome.
    pub fn file(&self, f: &ReceivedFile) {
        let (outcome, reason) = match &f.outcome {
            ReceivedOutcome::Received => ("received", None),
            ReceivedOutcome::InSync(_) => ("up_to_date", None),
            ReceivedOutcome::WouldReceive(_) => ("dry_run", None),
            ReceivedOutcome::Unfinished => ("unfinished", Some("UNFINISHED")),
            ReceivedOutcome::Rejected(r) => ("refused", Some(r.name().unwrap_or("UNKNOWN"))),
            ReceivedOutcome::Failed(s) => ("failed", Some(s.name().unwrap_or("UNKNOWN"))),
        };
        self.files
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
        if let Some(reason) = reason {
            self.failures
                .get_or_create(&vec![("reason", reason.to_owned())])
                .inc();
        }
    }

    /// Counts a connection's end (a refusal, by its reason).
    pub fn connection(&self, report: &ConnectionReport) {
        if let Some(reason) = report.refusal {
            self.refusals
                .get_or_create(&vec![("reason", reason.to_owned())])
                .inc();
        }
    }
}

/// The HTTP endpoint serving [`Metrics`]; stops when dropped.
pub struct Exporter {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Exporter {
    /// Serves `metrics` on `addr` from a thread of its own.
    pub fn start(addr: SocketAddr, metrics: &Metrics) -> Result<Exporter, String> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        let server = Arc::new(server);
        let registry = metrics.registry();
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("rdmaft-metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let mut body = String::new();
                    let encoded = encode(&mut body, &registry);
                    let response = match encoded {
                        Ok(()) => tiny_http::Response::from_string(body).with_header(
                            tiny_http::Header::from_bytes(
                                &b"Content-Type"[..],
                                &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
                            )
                            .expect("a valid header"),
                        ),
                        Err(_) => tiny_http::Response::from_string("encoding failed")
                            .with_status_code(500),
                    };
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
        Ok(Exporter {
            server,
            thread: Some(thread),
            addr,
        })
    }

    /// The address served, with the real port.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn scrape(addr: SocketAddr) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn a_scrape_shows_the_counts() {
        let m = Metrics::default();
        let e = Exporter::start("127.0.0.1:0".parse().unwrap(), &m).unwrap();
        m.sample(ReceiverStats {
            admitted: 3,
            active: 2,
            bytes_written: 1000,
            registered_bytes: 4096,
        });
        m.sample(ReceiverStats {
            admitted: 4,
            active: 1,
            bytes_written: 1500,
            registered_bytes: 8192,
        });
        m.connection(&ConnectionReport {
            refusal: Some("NOT_ALLOWED"),
            ..ConnectionReport::default()
        });
        let text = scrape(e.local_addr());
        assert!(
            text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
            "{text}"
        );
        for line in [
            "rdmaft_recv_connections_active 1",
            "rdmaft_recv_connections_total 4",
            "rdmaft_recv_bytes_total 1500",
            "rdmaft_recv_registered_memory_bytes 8192",
            "rdmaft_recv_refusals_total{reason=\"NOT_ALLOWED\"} 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
