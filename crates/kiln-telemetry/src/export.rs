//! What to export, read from OpenTelemetry's standard variables, and the OTLP/HTTP
//! exporters themselves.
//!
//! The exporters send protobuf bodies through a blocking reqwest 0.12 client (the version
//! the workspace already builds). The SDK runs each exporter on a thread of its own (the
//! batch span processor's, the periodic metric reader's), never on a Tokio worker, so a
//! blocking client is the right one; it is built and dropped off the async runtime.

use std::env;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::TelemetryError;

/// Which signals go out, decided once from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// `OTEL_SDK_DISABLED=true`: no OpenTelemetry at all, not even trace ids.
    pub disabled: bool,
    pub traces: bool,
    pub metrics: bool,
}

impl Plan {
    pub fn from_env() -> Result<Self, TelemetryError> {
        Self::from_lookup(|name| env::var(name).ok())
    }

    /// The decision, from any variable lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, TelemetryError> {
        let set = |name: &str| get(name).is_some_and(|v| !v.trim().is_empty());
        let is = |name: &str, value: &str| {
            get(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value))
        };
        let disabled = is("OTEL_SDK_DISABLED", "true");
        let endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        let traces = !disabled
            && (endpoint || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            && !is("OTEL_TRACES_EXPORTER", "none");
        let metrics = !disabled
            && (endpoint || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
            && !is("OTEL_METRICS_EXPORTER", "none");
        let mut protocols = vec!["OTEL_EXPORTER_OTLP_PROTOCOL"];
        if traces {
            protocols.push("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
        }
        if metrics {
            protocols.push("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL");
        }
        if traces || metrics {
            for variable in protocols {
                if let Some(value) = get(variable).filter(|v| !v.trim().is_empty())
                    && value.trim() != "http/protobuf"
                {
                    return Err(TelemetryError::UnsupportedProtocol { variable, value });
                }
            }
        }
        Ok(Plan { disabled, traces, metrics })
    }
}

/// `service.name` from `OTEL_SERVICE_NAME`, else the binary's name; `service.version`;
/// `OTEL_RESOURCE_ATTRIBUTES` (read by the SDK's resource detectors).
pub(crate) fn resource(service: &'static str) -> Resource {
    let name = env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| service.to_owned());
    Resource::builder()
        .with_service_name(name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The tracer provider: always an SDK one (so spans have trace ids to log and propagate),
/// with a batch OTLP exporter only when traces are exported.
pub(crate) fn tracer_provider(
    plan: &Plan,
    resource: Resource,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if plan.traces {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(BlockingClient::new()?)
            .build()
            .map_err(|err| TelemetryError::Exporter {
                signal: "trace",
                message: err.to_string(),
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// The meter provider with a periodic OTLP exporter (`OTEL_METRIC_EXPORT_INTERVAL`, 60 s
/// by default, and once more at shutdown).
pub(crate) fn meter_provider(resource: Resource) -> Result<SdkMeterProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(BlockingClient::new()?)
        .build()
        .map_err(|err| TelemetryError::Exporter { signal: "metrics", message: err.to_string() })?;
    Ok(SdkMeterProvider::builder().with_resource(resource).with_periodic_exporter(exporter).build())
}

/// A blocking reqwest client as OpenTelemetry's [`HttpClient`]. The client enforces
/// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds, 10 s by default) on each request, as the
/// trait asks of it, so a hung collector cannot hold an export (or the final flush) for long.
#[derive(Debug)]
struct BlockingClient(reqwest::blocking::Client);

impl BlockingClient {
    fn new() -> Result<Self, TelemetryError> {
        // reqwest's blocking client owns a runtime of its own and must not be built (or
        // dropped) on a Tokio worker thread: build it on a thread of its own.
        let timeout = env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
            .ok()
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(10), Duration::from_millis);
        std::thread::spawn(move || reqwest::blocking::Client::builder().timeout(timeout).build())
            .join()
            .map_err(|_| "the thread building the HTTP client panicked".to_owned())
            .and_then(|built| built.map_err(|err| err.to_string()))
            .map(BlockingClient)
            .map_err(|message| TelemetryError::Exporter { signal: "HTTP", message })
    }
}

#[async_trait::async_trait]
impl HttpClient for BlockingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())?;
        let mut outgoing = self.0.request(method, parts.uri.to_string()).body(body.to_vec());
        for (name, value) in &parts.headers {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
        let answer = outgoing.send()?;
        let status = answer.status().as_u16();
        let mut response = Response::builder().status(status);
        for (name, value) in answer.headers() {
            response = response.header(name.as_str(), value.as_bytes());
        }
        let body = answer.bytes()?;
        Ok(response.body(Bytes::from(body.to_vec()))?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn plan(vars: &[(&str, &str)]) -> Result<Plan, TelemetryError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Plan::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        let none = Plan { disabled: false, traces: false, metrics: false };
        assert_eq!(plan(&[]).unwrap(), none);
        assert_eq!(plan(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(), none);
        assert_eq!(plan(&[("OTEL_SERVICE_NAME", "kiln-x")]).unwrap(), none);
        // Without an endpoint, a protocol setting is irrelevant, not an error.
        assert_eq!(plan(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap(), none);
    }

    #[test]
    fn an_endpoint_exports_both_signals_unless_one_is_turned_off() {
        let both = plan(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]).unwrap();
        assert_eq!(both, Plan { disabled: false, traces: true, metrics: true });
        let traces_only =
            plan(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]).unwrap();
        assert_eq!(traces_only, Plan { disabled: false, traces: true, metrics: false });
        let no_metrics = plan(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ])
        .unwrap();
        assert_eq!(no_metrics, Plan { disabled: false, traces: true, metrics: false });
        let disabled = plan(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])
        .unwrap();
        assert_eq!(disabled, Plan { disabled: true, traces: false, metrics: false });
    }

    #[test]
    fn only_http_protobuf_is_accepted() {
        let ok = plan(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        assert!(ok.is_ok());
        let err = plan(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL=`grpc`"), "{err}");
    }

    #[test]
    fn spans_reach_an_otlp_http_receiver_through_the_blocking_client() {
        use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};

        let receiver = crate::testing::OtlpReceiver::start();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", receiver.endpoint()))
            .with_http_client(BlockingClient::new().unwrap())
            .build()
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name("kiln-test").build())
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("kiln");
        let mut span = tracer.start("kiln.test");
        span.set_attribute(KeyValue::new("job.id", "j-1"));
        span.end();
        // Shutting down flushes: what the guard does when a process ends.
        provider.shutdown().unwrap();
        let spans = receiver.spans();
        assert_eq!(spans.len(), 1, "{:?}", receiver.requests());
        assert_eq!(spans[0].name, "kiln.test");
        assert_eq!(spans[0].service, "kiln-test");
        assert_eq!(spans[0].attribute("job.id"), Some("j-1"));
        assert_eq!(receiver.requests(), ["POST /v1/traces"]);
    }
}
