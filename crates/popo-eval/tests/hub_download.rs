//! With the `hub` feature: a benchmark missing from the Hugging Face cache is downloaded into it
//! (the standard layout, `refs/main` and a snapshot) and converted; a missing file and a stalled
//! server are errors naming the dataset and the file. The hub is a fake one on 127.0.0.1
//! (`HF_ENDPOINT`, which only this test binary sets), so nothing leaves the machine.
#![cfg(feature = "hub")]

use popo_eval::datasets::{find, Places};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const MATH500: &str = "/datasets/HuggingFaceH4/MATH-500/resolve/main/test.jsonl";
const ROWS: &[u8] = b"{\"problem\": \"1+1?\", \"answer\": \"2\"}\n\
                      {\"problem\": \"2+2?\", \"answer\": \"4\"}\n";

/// Answers one request the way the hub's `resolve` endpoint does for `MATH500`: the byte range
/// asked for (hf-hub asks `bytes=0-0` for the metadata, then `bytes=N-`), with the file's etag
/// and the commit; 404 for anything else.
fn serve(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    let _ = reader.read_line(&mut request);
    let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut start, mut end) = (0, ROWS.len());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some(range) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let (a, b) = range.trim().split_once('-').unwrap();
            start = a.parse().unwrap();
            if !b.is_empty() {
                end = b.parse::<usize>().unwrap() + 1;
            }
        }
    }
    if path != MATH500 {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let body = &ROWS[start..end];
    let head = format!(
        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\n\
         Content-Range: bytes {start}-{}/{}\r\nETag: \"etag-math500\"\r\n\
         X-Repo-Commit: {COMMIT}\r\nConnection: close\r\n\r\n",
        body.len(),
        end - 1,
        ROWS.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

#[test]
fn a_missing_benchmark_is_downloaded_into_the_cache_then_converted() {
    let hub = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hub.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in hub.incoming().flatten() {
            serve(stream);
        }
    });
    // Straight to the fake hub, not through a proxy the environment may name.
    for proxy in [
        "ALL_PROXY",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "all_proxy",
        "https_proxy",
        "http_proxy",
    ] {
        std::env::remove_var(proxy);
    }
    std::env::set_var("HF_ENDPOINT", format!("http://{addr}"));
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let places = Places {
        data_dir: None,
        converted: Some(tmp.path().join("popo/data")),
        hf_cache: Some(cache.clone()),
        download: true,
    };
    let copy = find("math500", &places).unwrap();
    assert_eq!(copy, tmp.path().join("popo/data/math500.jsonl"));
    let repo = cache.join("datasets--HuggingFaceH4--MATH-500");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main"))
            .unwrap()
            .trim(),
        COMMIT
    );
    let snapshot = repo.join("snapshots").join(COMMIT).join("test.jsonl");
    assert_eq!(std::fs::read(&snapshot).unwrap(), ROWS);
    assert_eq!(std::fs::read_to_string(&copy).unwrap().lines().count(), 2);

    // A file the hub does not have: the error names the dataset and the file.
    let msg = format!("{:#}", find("aime24", &places).unwrap_err());
    assert!(
        msg.contains("data/train-00000-of-00001.parquet of dataset HuggingFaceH4/aime_2024"),
        "{msg}"
    );
    assert!(
        msg.contains("hf download --repo-type dataset HuggingFaceH4/aime_2024"),
        "{msg}"
    );

    // A hub that accepts and never answers: given up after the timeout.
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled_addr = stalled.local_addr().unwrap();
    std::thread::spawn(move || {
        // Connections are held open, never answered.
        let mut held = Vec::new();
        for stream in stalled.incoming().flatten() {
            held.push(stream);
        }
    });
    std::env::set_var("HF_ENDPOINT", format!("http://{stalled_addr}"));
    let e = popo_model::hub::download_dataset_file(
        "org/slow",
        "test.jsonl",
        &tmp.path().join("hub2"),
        Duration::from_secs(1),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("test.jsonl of dataset org/slow") && e.contains("took over 1 s"),
        "{e}"
    );
}
