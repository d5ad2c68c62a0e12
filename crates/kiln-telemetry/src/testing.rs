//! An OTLP/HTTP receiver for tests (feature `testing`): a real collector endpoint on
//! 127.0.0.1 that accepts `POST /v1/traces` and `POST /v1/metrics` with protobuf bodies,
//! as Kiln's exporters send them, decodes them with `opentelemetry-proto` and keeps what
//! it received for the test to inspect.
//!
//! It speaks just enough HTTP/1.1 for an exporter: keep-alive, `Content-Length` bodies,
//! an empty `200` answer (an empty protobuf message is a valid export response).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

/// One span as received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's span kind: 1 internal, 2 server, 3 client.
    pub kind: i32,
    /// Attribute values rendered as text.
    pub attributes: BTreeMap<String, String>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// Links to other spans, as (trace id, span id).
    pub links: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// One metric as received (one entry per export that carried it).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMetric {
    pub service: String,
    pub name: String,
    pub unit: String,
}

#[derive(Debug, Default)]
struct Received {
    requests: Vec<String>,
    spans: Vec<ReceivedSpan>,
    metrics: Vec<ReceivedMetric>,
}

/// The receiver; stops accepting when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
}

impl OtlpReceiver {
    /// Listens on a free port of 127.0.0.1.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0").expect("bind the OTLP receiver")
    }

    /// Listens on `addr` (e.g. a collector's default `127.0.0.1:4318`), if it is free.
    pub fn start_on(addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Ok(OtlpReceiver { addr, received, stop })
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `METHOD path` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }

    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        self.lock().metrics.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Answers requests on one connection until the client closes it.
fn serve(stream: TcpStream, received: &Mutex<Received>) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or(""));
        let path = path.to_owned();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.trim().eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = record(received, &method, &path, &body);
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn record(received: &Mutex<Received>, method: &str, path: &str, body: &[u8]) -> &'static str {
    let mut received = received.lock().unwrap_or_else(|e| e.into_inner());
    received.requests.push(format!("{method} {path}"));
    match path {
        "/v1/traces" => match ExportTraceServiceRequest::decode(body) {
            Ok(request) => {
                for resource_spans in request.resource_spans {
                    let service = service_name(
                        resource_spans.resource.as_ref().map_or(&[][..], |r| &r.attributes),
                    );
                    for scope in resource_spans.scope_spans {
                        for span in scope.spans {
                            received.spans.push(ReceivedSpan {
                                service: service.clone(),
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                                name: span.name,
                                kind: span.kind,
                                attributes: attributes(&span.attributes),
                                start_unix_nano: span.start_time_unix_nano,
                                end_unix_nano: span.end_time_unix_nano,
                                links: span
                                    .links
                                    .iter()
                                    .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                                    .collect(),
                            });
                        }
                    }
                }
                "200 OK"
            }
            Err(_) => "400 Bad Request",
        },
        "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
            Ok(request) => {
                for resource_metrics in request.resource_metrics {
                    let service = service_name(
                        resource_metrics.resource.as_ref().map_or(&[][..], |r| &r.attributes),
                    );
                    for scope in resource_metrics.scope_metrics {
                        for metric in scope.metrics {
                            received.metrics.push(ReceivedMetric {
                                service: service.clone(),
                                name: metric.name,
                                unit: metric.unit,
                            });
                        }
                    }
                }
                "200 OK"
            }
            Err(_) => "400 Bad Request",
        },
        _ => "404 Not Found",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn service_name(attributes: &[KeyValue]) -> String {
    self::attributes(attributes).remove("service.name").unwrap_or_default()
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes.iter().map(|kv| (kv.key.clone(), render(kv.value.as_ref()))).collect()
}

fn render(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| render(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
