//! Kiln's web UI, mounted by kiln-api under `/ui`: everything about the pages that does not
//! need HTTP.
//!
//! kiln-api owns the HTTP side (its `ui` module: routes, the session extractor, reading
//! through the same repositories, queue and handlers as the REST API, so the UI has the
//! API's team scoping and roles by construction). This crate owns what those handlers
//! render and compute, with no HTTP framework and no database:
//!
//! - [`pages`]: every page as server-rendered HTML (maud templates compiled into the
//!   binary), from kiln-types' wire types; empty states and errors that say what to do next.
//! - [`downsample`]: M4 downsampling (first, last, min and max of each bucket) so a chart
//!   gets at most [`downsample::MAX_POINTS`] points per series whatever the run's size,
//!   keeping every extreme and both ends; [`downsample::ChartData`] is the JSON the charts
//!   fetch.
//! - [`session`]: the sign-in session's secret (a random id whose sha256 is all the
//!   database keeps), the CSRF token bound to it, the sign-in form's double-submit token,
//!   and the cookies' attributes (HttpOnly, SameSite=Strict, Secure over TLS).
//! - [`assets`]: uPlot (vendored from the npm registry, MIT, with its licence) and the UI's
//!   own small script and stylesheet, served under content-hashed names.
//! - [`parallel`]: the compare view's parallel-coordinates plot as SVG.
//! - [`query`]: query strings with repeated keys (`?id=a&id=b`).
//! - [`search`]: the runs list's search expressions (`lr=0.01 val_accuracy>0.9`).

pub mod assets;
pub mod downsample;
pub mod pages;
pub mod parallel;
pub mod query;
pub mod search;
pub mod session;

/// Errors of the UI's own parsing (the HTTP side maps them to 400 pages).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UiError {
    #[error("cannot read the search term `{term}`: {reason}")]
    BadSearch { term: String, reason: String },
}
