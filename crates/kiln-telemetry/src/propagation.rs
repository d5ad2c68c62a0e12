//! W3C trace context as plain strings, so the other crates need no OpenTelemetry types: the
//! API reads a request's `traceparent` header into its server span ([`continue_trace`]),
//! stores the submitting span's context on the job row ([`traceparent`]), and the worker
//! continues that trace for the job ([`continue_trace`] again).
//!
//! Every function works on a `tracing::Span`; without the OpenTelemetry layer (a test that
//! did not call [`crate::init`]) they do nothing and return `None`/`false`.
//!
//! Also here: [`record_trace_id`], which writes the span's trace id into its `trace_id`
//! field so log lines under it carry the trace id, and [`record_span`], for a stage whose
//! timing is only known after it happened (the worker's claim: the job, hence its trace,
//! is known only once the claim returns).

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Makes `span` a child of the remote span named by a W3C `traceparent` (and its
/// `tracestate`), when the value is valid. Call it before the span is first entered.
/// Returns whether the span now continues that trace.
pub fn continue_trace(
    span: &tracing::Span,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> bool {
    let Some(traceparent) = traceparent.map(str::trim).filter(|v| !v.is_empty()) else {
        return false;
    };
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    let parent = TraceContextPropagator::new().extract(&carrier);
    if !parent.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(parent).is_ok()
}

/// The W3C `traceparent` naming `span`, for a process that continues its trace later.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Links `span` to the span named by a W3C `traceparent` (serving: a batch span links every
/// request it answered, each of which has its own trace). Returns whether a link was added.
pub fn link_to(span: &tracing::Span, traceparent: &str) -> bool {
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    let linked = TraceContextPropagator::new().extract(&carrier);
    let linked = linked.span().span_context().clone();
    if !linked.is_valid() {
        return false;
    }
    span.add_link(linked);
    true
}

/// `span`'s trace id, 32 lowercase hex digits.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// Records `span`'s trace id into its `trace_id` field (declare it as
/// `trace_id = tracing::field::Empty`), so every log line under the span shows it. After
/// this, the span's parent is fixed: call [`continue_trace`] first.
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id.as_str());
    }
}

/// An attribute value for [`record_span`].
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl From<&str> for AttributeValue {
    fn from(v: &str) -> Self {
        AttributeValue::Str(v.to_owned())
    }
}
impl From<String> for AttributeValue {
    fn from(v: String) -> Self {
        AttributeValue::Str(v)
    }
}
impl From<i64> for AttributeValue {
    fn from(v: i64) -> Self {
        AttributeValue::Int(v)
    }
}
impl From<f64> for AttributeValue {
    fn from(v: f64) -> Self {
        AttributeValue::Float(v)
    }
}
impl From<bool> for AttributeValue {
    fn from(v: bool) -> Self {
        AttributeValue::Bool(v)
    }
}

impl From<AttributeValue> for Value {
    fn from(v: AttributeValue) -> Self {
        match v {
            AttributeValue::Str(s) => Value::from(s),
            AttributeValue::Int(i) => Value::I64(i),
            AttributeValue::Float(f) => Value::F64(f),
            AttributeValue::Bool(b) => Value::Bool(b),
        }
    }
}

/// Exports a finished child span of `parent` that ran from `start` to `end`, with these
/// attributes. For a stage whose span could not be open while it ran.
pub fn record_span(
    parent: &tracing::Span,
    name: &'static str,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<(&'static str, AttributeValue)>,
) {
    let context = parent.context();
    if !context.span().span_context().is_valid() {
        return;
    }
    let tracer = opentelemetry::global::tracer("kiln");
    let mut span = tracer
        .span_builder(name)
        .with_start_time(start)
        .with_attributes(attributes.into_iter().map(|(k, v)| KeyValue::new(k, Value::from(v))))
        .start_with_context(&tracer, &context);
    span.end_with_timestamp(end.max(start));
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const REMOTE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Runs `f` under a subscriber with the OpenTelemetry layer (no exporter).
    fn with_otel<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn a_span_continues_a_remote_traceparent_and_hands_it_on() {
        with_otel(|| {
            let span = tracing::info_span!("server", trace_id = tracing::field::Empty);
            assert!(continue_trace(&span, Some(REMOTE), None));
            assert_eq!(trace_id(&span).unwrap(), "4bf92f3577b34da6a3ce929d0e0e4736");
            let child = span.in_scope(|| tracing::info_span!("child"));
            let handed_on = traceparent(&child).unwrap();
            let parts: Vec<&str> = handed_on.split('-').collect();
            assert_eq!(parts[0], "00");
            assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
            assert_ne!(parts[2], "00f067aa0ba902b7", "the child's own span id");
            assert_eq!(parts[3], "01", "sampled");

            // A worker continuing the stored value lands in the same trace.
            let job = tracing::info_span!("job");
            assert!(continue_trace(&job, Some(&handed_on), None));
            assert_eq!(trace_id(&job).unwrap(), "4bf92f3577b34da6a3ce929d0e0e4736");
        });
    }

    #[test]
    fn invalid_or_missing_traceparents_start_a_new_trace() {
        with_otel(|| {
            for bad in [None, Some(""), Some("garbage"), Some("00-0000-00f067aa0ba902b7-01")] {
                let span = tracing::info_span!("server");
                assert!(!continue_trace(&span, bad, None), "{bad:?}");
                let id = trace_id(&span).expect("a new trace");
                assert_eq!(id.len(), 32);
                assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
            }
            let zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
            assert!(!continue_trace(&tracing::info_span!("s"), Some(zeros), None));
        });
    }

    #[test]
    fn without_the_layer_everything_is_a_no_op() {
        let span = tracing::info_span!("plain");
        assert!(!continue_trace(&span, Some(REMOTE), None));
        assert_eq!(traceparent(&span), None);
        assert_eq!(trace_id(&span), None);
        record_trace_id(&span);
        record_span(&span, "x", SystemTime::now(), SystemTime::now(), Vec::new());
    }
}
