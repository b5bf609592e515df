//! JSON over HTTP to a set of rollout servers: every call has a time limit (connection and the
//! whole exchange), and a request that fails or times out can be sent again to the next server,
//! a bounded number of times. A hung or dead server therefore costs at most
//! `(max_retries + 1) x timeout` before the caller gets an error naming the server and the request.

use serde_json::Value;
use std::time::Duration;

/// A call that did not succeed: which server, which request, why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("server {server}: {request}: {cause}")]
pub struct ServerError {
    pub server: String,
    /// What was asked, in words (`generate prompt 3 (8 samples)`, `reload_weights`).
    pub request: String,
    pub cause: String,
    /// A transport failure or a 5xx answer, which another server (or a later try) may not
    /// have; a 4xx answer is the request's own fault and is never retried.
    pub retryable: bool,
}

/// The servers of one engine and the HTTP agent that reaches them.
#[derive(Clone)]
pub struct Servers {
    urls: Vec<String>,
    agent: ureq::Agent,
    max_retries: usize,
}

impl Servers {
    /// `urls` are base URLs (a trailing `/` is dropped); every call ends after `timeout`.
    pub fn new(urls: &[String], timeout: Duration, max_retries: usize) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .build();
        Self {
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            agent,
            max_retries,
        }
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    pub fn url(&self, server: usize) -> &str {
        &self.urls[server]
    }

    /// GET `path` from server `server`, once.
    pub fn get(&self, server: usize, path: &str, request: &str) -> Result<Value, ServerError> {
        let url = format!("{}{path}", self.urls[server]);
        self.answer(server, request, self.agent.get(&url).call())
    }

    /// POST `body` to `path` on server `server`, once: for calls every server must answer
    /// itself (a reload, the sync probe).
    pub fn post(
        &self,
        server: usize,
        path: &str,
        body: &Value,
        request: &str,
    ) -> Result<Value, ServerError> {
        let url = format!("{}{path}", self.urls[server]);
        self.answer(server, request, self.agent.post(&url).send_json(body))
    }

    /// POST to server `first`; after a retryable failure, to the next server (cyclically), at
    /// most `max_retries` more times. The error is the last try's, with the earlier ones named.
    pub fn post_retrying(
        &self,
        first: usize,
        path: &str,
        body: &Value,
        request: &str,
    ) -> Result<Value, ServerError> {
        let mut failed: Vec<String> = Vec::new();
        let mut attempt = 0;
        loop {
            let server = (first + attempt) % self.urls.len();
            match self.post(server, path, body, request) {
                Ok(v) => {
                    if !failed.is_empty() {
                        tracing::warn!(
                            "{request}: answered by {} after {}",
                            self.urls[server],
                            failed.join("; ")
                        );
                    }
                    return Ok(v);
                }
                Err(e) if e.retryable && attempt < self.max_retries => {
                    tracing::warn!("{e}; retrying on the next server");
                    failed.push(format!("{}: {}", e.server, e.cause));
                }
                Err(mut e) => {
                    if !failed.is_empty() {
                        e.cause = format!(
                            "{} (after {} earlier tries: {})",
                            e.cause,
                            failed.len(),
                            failed.join("; ")
                        );
                    }
                    return Err(e);
                }
            }
            attempt += 1;
        }
    }

    fn answer(
        &self,
        server: usize,
        request: &str,
        result: Result<ureq::Response, ureq::Error>,
    ) -> Result<Value, ServerError> {
        let fail = |cause: String, retryable: bool| ServerError {
            server: self.urls[server].clone(),
            request: request.to_string(),
            cause,
            retryable,
        };
        match result {
            // Most answers are JSON; a few (vLLM's `/v1/load_lora_adapter`) are plain text,
            // which comes back as a JSON string. No size limit: a step's completions with their
            // log-probs can be tens of megabytes.
            Ok(resp) => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut resp.into_reader(), &mut text)
                    .map_err(|e| fail(format!("reading the answer: {e}"), true))?;
                Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
            }
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                let body: String = body.chars().take(500).collect();
                Err(fail(format!("HTTP {code}: {body}"), code >= 500))
            }
            Err(ureq::Error::Transport(t)) => Err(fail(t.to_string(), true)),
        }
    }
}

/// Fault injectors on real sockets, for this module's tests and the engine's.
#[cfg(test)]
pub(crate) mod fake {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    /// A fault injector on a real socket: each accepted connection is handled by `reply`.
    pub fn fake(reply: impl Fn(std::net::TcpStream) + Send + 'static) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                reply(s);
            }
        });
        url
    }

    /// Reads one request (headers and a Content-Length body) off `s`.
    pub fn read_request(s: &mut std::net::TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return text;
                }
            }
        }
        String::from_utf8_lossy(&buf).to_string()
    }

    pub fn ok_server(body: String) -> String {
        fake(move |mut s| {
            read_request(&mut s);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        })
    }

    /// Accepts and never answers (a SIGSTOPped server looks like this: the kernel accepts).
    pub fn hung_server() -> String {
        fake(|s| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(60));
                drop(s);
            });
        })
    }

    /// Accepts and closes at once (a server that died mid-request).
    pub fn closing_server() -> String {
        fake(drop)
    }

    pub fn status_server(code: u16) -> String {
        fake(move |mut s| {
            read_request(&mut s);
            let _ = write!(
                s,
                "HTTP/1.1 {code} Oops\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
            );
        })
    }

    /// A port nothing listens on.
    pub fn dead_url() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        url
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    #[test]
    fn a_hung_server_times_out_and_the_request_goes_to_the_next() {
        let urls = vec![hung_server(), ok_server(r#"{"ok": 1}"#.into())];
        let s = Servers::new(&urls, Duration::from_millis(500), 2);
        let t = Instant::now();
        let v = s
            .post_retrying(0, "/x", &json!({}), "generate prompt 0")
            .unwrap();
        assert_eq!(v, json!({"ok": 1}));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[test]
    fn retries_are_bounded_and_the_error_names_server_and_request() {
        let urls = vec![closing_server(), hung_server()];
        let s = Servers::new(&urls, Duration::from_millis(300), 3);
        let t = Instant::now();
        let e = s
            .post_retrying(1, "/x", &json!({}), "generate prompt 7")
            .unwrap_err();
        // Tries: server 1 (hangs), 0 (closes), 1, 0: four, the last on server 0.
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(e.server, urls[0]);
        assert_eq!(e.request, "generate prompt 7");
        assert!(e.cause.contains("3 earlier tries"), "{}", e.cause);
        let msg = e.to_string();
        assert!(
            msg.contains(&urls[0]) && msg.contains("generate prompt 7"),
            "{msg}"
        );
    }

    #[test]
    fn a_refused_connection_fails_fast_with_the_url() {
        let url = dead_url();
        let s = Servers::new(std::slice::from_ref(&url), Duration::from_secs(30), 0);
        let t = Instant::now();
        let e = s.get(0, "/v1/models", "list models").unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(e.to_string().contains(&url), "{e}");
        assert!(e.retryable);
    }

    #[test]
    fn a_client_error_is_not_retried() {
        let urls = vec![status_server(400), ok_server(r#"{"ok": 1}"#.into())];
        let s = Servers::new(&urls, Duration::from_secs(5), 3);
        let e = s
            .post_retrying(0, "/x", &json!({}), "generate prompt 1")
            .unwrap_err();
        assert!(!e.retryable);
        assert_eq!(e.server, urls[0]);
        assert!(
            e.cause.contains("HTTP 400") && e.cause.contains("nope"),
            "{}",
            e.cause
        );
        // A 5xx is the server's: the next one answers.
        let urls = vec![status_server(503), ok_server(r#"{"ok": 2}"#.into())];
        let s = Servers::new(&urls, Duration::from_secs(5), 1);
        assert_eq!(
            s.post_retrying(0, "/x", &json!({}), "r").unwrap(),
            json!({"ok": 2})
        );
    }
}
