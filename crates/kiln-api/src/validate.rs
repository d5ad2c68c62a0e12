//! Input checks shared by routes.

use serde_json::Value;

use crate::error::ApiError;

/// PostgreSQL text and JSONB cannot hold U+0000. A body carrying it anywhere (a run's
/// params, a job spec, a name) is refused with 422 naming the place, rather than failing
/// in the database.
pub fn no_nul_chars(value: &Value, root: &str) -> Result<(), ApiError> {
    fn find(value: &Value, path: String) -> Option<String> {
        match value {
            Value::String(s) if s.contains('\0') => Some(path),
            Value::Array(items) => {
                items.iter().enumerate().find_map(|(i, v)| find(v, format!("{path}[{i}]")))
            }
            Value::Object(map) => map.iter().find_map(|(k, v)| {
                if k.contains('\0') {
                    Some(path.clone())
                } else {
                    find(v, if path.is_empty() { k.clone() } else { format!("{path}.{k}") })
                }
            }),
            _ => None,
        }
    }
    match find(value, root.to_owned()) {
        Some(path) => Err(ApiError::validation([(
            if path.is_empty() { "body".to_owned() } else { path },
            "must not contain the NUL character (U+0000)".to_owned(),
        )])),
        None => Ok(()),
    }
}

/// Middleware: a URL whose path or query encodes U+0000 (`%00`) is refused with 400
/// before any handler can pass it to PostgreSQL, which cannot store or compare it.
pub async fn refuse_nul_in_url(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let uri = req.uri().to_string();
    if uri.to_ascii_lowercase().contains("%00") {
        let (req, _) = req.into_parts();
        let res = actix_web::ResponseError::error_response(&ApiError::bad_request(
            "the URL must not contain the NUL character (%00)",
        ));
        return Ok(actix_web::dev::ServiceResponse::new(req, res));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::no_nul_chars;

    #[test]
    fn nul_is_found_and_named_anywhere() {
        assert!(no_nul_chars(&json!({"a": ["x", {"b": "ok"}]}), "").is_ok());
        let err = no_nul_chars(&json!({"a": ["x", {"b": "o\u{0}k"}]}), "").unwrap_err();
        assert!(err.details["fields"]["a[1].b"].is_string(), "{:?}", err.details);
        let err = no_nul_chars(&json!({"k\u{0}": 1}), "params").unwrap_err();
        assert!(err.details["fields"]["params"].is_string());
    }
}
