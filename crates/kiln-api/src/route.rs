//! The route pattern of a request (`/v1/deployments/{name}/predict`, never the raw path with
//! its ids), which both the metrics and the tracing middleware label every request with.
//!
//! actix finds a path's pattern by trying the routes' regular expressions one after the
//! other; on the predict path that was a tenth of the request's CPU, twice over (once per
//! middleware). Here it is found once per request (kept in the request's extensions for the
//! second middleware) and remembered per path, so a hot path such as a deployment's predict
//! route is matched once per process, not once per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix_web::HttpMessage as _;
use actix_web::dev::ServiceRequest;

/// Paths remembered at most; the memo starts over when full (ids make paths unbounded).
const MAX_PATHS: usize = 4096;
/// Longer paths are matched every time rather than remembered.
const MAX_PATH_LEN: usize = 256;

/// A request's pattern, in its extensions once found.
#[derive(Clone)]
struct Matched(Arc<str>);

/// Path → route pattern, for one application (its route table never changes).
#[derive(Debug, Default)]
pub struct RoutePatterns {
    memo: RwLock<HashMap<Box<str>, Arc<str>>>,
}

impl RoutePatterns {
    /// The pattern `req`'s path matches, or `unmatched`.
    pub fn of(&self, req: &ServiceRequest) -> Arc<str> {
        if let Some(Matched(pattern)) = req.extensions().get::<Matched>() {
            return pattern.clone();
        }
        let path = req.path();
        let remembered = self.memo.read().ok().and_then(|memo| memo.get(path).cloned());
        let pattern = remembered.unwrap_or_else(|| {
            let pattern: Arc<str> = req.match_pattern().as_deref().unwrap_or("unmatched").into();
            if path.len() <= MAX_PATH_LEN
                && let Ok(mut memo) = self.memo.write()
            {
                if memo.len() >= MAX_PATHS {
                    memo.clear();
                }
                memo.insert(path.into(), pattern.clone());
            }
            pattern
        });
        req.extensions_mut().insert(Matched(pattern.clone()));
        pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use actix_web::{App, HttpResponse, web};

    #[actix_web::test]
    async fn patterns_are_found_remembered_and_bounded() {
        let patterns = Arc::new(RoutePatterns::default());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (p, s) = (patterns.clone(), seen.clone());
        let app = actix_web::test::init_service(
            App::new()
                .wrap_fn(move |req, srv| {
                    use actix_web::dev::Service as _;
                    // Twice, as the two middlewares ask: the same answer.
                    let first = p.of(&req);
                    assert_eq!(first, p.of(&req));
                    s.lock().unwrap().push(first.to_string());
                    srv.call(req)
                })
                .route("/v1/deployments/{name}/predict", web::post().to(HttpResponse::Ok))
                .route("/v1/jobs/{id}", web::get().to(HttpResponse::Ok)),
        )
        .await;
        for uri in ["/v1/deployments/a/predict", "/v1/deployments/a/predict", "/v1/jobs/7", "/nope"]
        {
            let req = TestRequest::post().uri(uri).to_request();
            actix_web::test::call_service(&app, req).await;
        }
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "/v1/deployments/{name}/predict",
                "/v1/deployments/{name}/predict",
                "/v1/jobs/{id}",
                "unmatched"
            ]
        );
        assert_eq!(patterns.memo.read().unwrap().len(), 3);
        for i in 0..MAX_PATHS + 10 {
            let req = TestRequest::get().uri(&format!("/v1/jobs/{i}")).to_request();
            actix_web::test::call_service(&app, req).await;
        }
        assert!(patterns.memo.read().unwrap().len() <= MAX_PATHS);
        assert_eq!(seen.lock().unwrap().last().unwrap(), "/v1/jobs/{id}");
    }
}
