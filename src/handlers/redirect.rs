//! `redirect`: answers every request with a redirect to `to`.
//!
//! ```toml
//! [apps.old]
//! handler = { kind = "redirect", to = "https://example.com/", status = 308 }
//! ```
//!
//! `status` is one of 301, 302 (the default), 303, 307 and 308. With `keep_path = true` the request's
//! path and query are appended to `to` (for moving a whole site: `to = "https://new.example.com"`).

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, StatusCode};
use parapet_middlewares::Body;

use crate::config::Table;
use crate::{AppService, Request, Response};

/// The settings of a `redirect` handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `to`: the Location, absolute or relative.
    pub to: String,
    /// `status`, default 302.
    pub status: StatusCode,
    /// `keep_path`: append the request's path and query to `to`.
    pub keep_path: bool,
}

impl Redirect {
    /// The service answering every request with this redirect.
    pub fn service(&self) -> AppService {
        let fixed = HeaderValue::from_str(&self.to).ok();
        let settings = Arc::new(self.clone());
        AppService::new(tower::service_fn(move |req: Request| {
            let settings = Arc::clone(&settings);
            let fixed = fixed.clone();
            async move {
                let location = match fixed {
                    Some(v) if !settings.keep_path => v,
                    _ => {
                        let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
                        let target = format!("{}{}", settings.to.trim_end_matches('/'), pq);
                        // The request target was valid header text and so is `to`.
                        HeaderValue::from_str(&target)
                            .unwrap_or_else(|_| HeaderValue::from_static("/"))
                    }
                };
                let mut response = Response::new(Body::empty());
                *response.status_mut() = settings.status;
                response.headers_mut().insert(header::LOCATION, location);
                Ok::<_, Infallible>(response)
            }
        }))
    }
}

/// Reads a `redirect` handler's table.
pub(crate) fn parse(t: &mut Table<'_>) -> Option<Redirect> {
    let to = t.required("to").and_then(|v| {
        let s = v.str()?;
        if s.is_empty() || HeaderValue::from_str(s).is_err() || s.parse::<http::Uri>().is_err() {
            v.error(format!("invalid redirect target {s:?}"));
            return None;
        }
        Some(s.to_owned())
    });
    let status = match t.get("status") {
        None => Some(StatusCode::FOUND),
        Some(v) => match v.int_in(300..=399) {
            Some(n @ (301 | 302 | 303 | 307 | 308)) => StatusCode::from_u16(n as u16).ok(),
            Some(_) => {
                v.error("a redirect status is one of 301, 302, 303, 307, 308");
                None
            }
            None => None,
        },
    };
    let keep_path = t.bool("keep_path").unwrap_or(false);
    Some(Redirect {
        to: to?,
        status: status?,
        keep_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn redirect_sends_location_and_status() {
        let svc = Redirect {
            to: "https://example.com/".into(),
            status: StatusCode::PERMANENT_REDIRECT,
            keep_path: false,
        }
        .service();
        let req = http::Request::get("/old/page").body(Body::empty()).unwrap();
        let response = svc.oneshot(req).await.unwrap();
        assert_eq!(response.status(), 308);
        assert_eq!(response.headers()["location"], "https://example.com/");
    }

    #[tokio::test]
    async fn redirect_with_keep_path_appends_path_and_query() {
        let svc = Redirect {
            to: "https://new.example.com/".into(),
            status: StatusCode::MOVED_PERMANENTLY,
            keep_path: true,
        }
        .service();
        let req = http::Request::get("/a/b?c=d").body(Body::empty()).unwrap();
        let response = svc.oneshot(req).await.unwrap();
        assert_eq!(
            response.headers()["location"],
            "https://new.example.com/a/b?c=d"
        );
    }
}
