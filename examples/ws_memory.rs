//! Resident memory per open WebSocket (docs/performance.md, "Memory per WebSocket").
//!
//! Opens `sockets` connections (default 1,000) to a loopback server, polls each stream once in
//! its own task (as an attachment does: the first read fills the read buffer), and prints the
//! growth of the process's resident set (`VmRSS`, Linux only) per socket. The server runs in a
//! child process (this example, with the argument `serve`), so only the client is measured.
//!
//! ```text
//! cargo run --release --example ws_memory -- [sockets] [read_buffer_bytes] [write_buffer_bytes]
//! cargo run --release --example ws_memory -- [sockets] old
//! ```
//!
//! Without buffer sizes, the crate's defaults are used; `131072 131072` are tungstenite's own.
//! `old` opens the sockets the way `ws::connect` did before its buffer sizes were configurable
//! (async-tungstenite's `connect_async_with_config`, tungstenite's default buffers, the old
//! 64 MiB limits), each polled the same way.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use futures::StreamExt;
use livecache::{BoxError, ws};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ws_memory: no runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = if args.first().map(String::as_str) == Some("serve") {
        runtime.block_on(serve())
    } else {
        runtime.block_on(measure(&args))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ws_memory failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The server: prints its port, then accepts WebSockets and holds them until the client goes.
async fn serve() -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Ok(mut socket) = async_tungstenite::tokio::accept_async(tcp).await {
                while let Some(Ok(_)) = socket.next().await {}
            }
        });
    }
}

/// A socket opened as `ws::connect` did before, polled in its own task.
async fn open_as_before(url: &str) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    use async_tungstenite::tungstenite::protocol::WebSocketConfig;
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (mut socket, _) =
        async_tungstenite::tokio::connect_async_with_config(url, Some(config)).await?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(_)) = socket.next().await {}
    }))
}

/// The process's resident set, in KiB.
fn vm_rss_kib() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/self/status (Linux only)")?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .ok_or("a malformed VmRSS line")?;
    Ok(kib.parse()?)
}

async fn measure(args: &[String]) -> Result<(), BoxError> {
    let number = |i: usize| -> Result<Option<usize>, BoxError> {
        Ok(args.get(i).map(|a| a.parse()).transpose()?)
    };
    let sockets = number(0)?.unwrap_or(1000);
    let old = args.get(1).map(String::as_str) == Some("old");
    let read_buffer = if old { None } else { number(1)? };
    let write_buffer = if old { None } else { number(2)? };

    let exe = std::env::current_exe()?;
    let mut server = Command::new(exe)
        .arg("serve")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = server.stdout.take().ok_or("no server stdout")?;
    let mut port = String::new();
    BufReader::new(stdout).read_line(&mut port)?;
    let url = format!("ws://127.0.0.1:{}/", port.trim());

    let outcome = async {
        // Warm up the runtime, the allocator and the connect path with one socket.
        let warm = ws::connect::<serde_json::Value>(url.as_str())
            .open()
            .await?;
        drop(warm);
        tokio::time::sleep(Duration::from_millis(100)).await;

        let before = vm_rss_kib()?;
        let mut tasks = Vec::with_capacity(sockets);
        let mut limits = None;
        for _ in 0..sockets {
            if old {
                tasks.push(open_as_before(&url).await?);
                continue;
            }
            let mut connect = ws::connect::<serde_json::Value>(url.as_str());
            if let Some(bytes) = read_buffer {
                connect = connect.read_buffer_bytes(bytes);
            }
            if let Some(bytes) = write_buffer {
                connect = connect.write_buffer_bytes(bytes);
            }
            let mut socket = connect.open().await?;
            limits = Some(socket.limits());
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(_)) = socket.next().await {}
            }));
        }
        // Let every task poll its stream (its first read).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = vm_rss_kib()?;
        let per_socket = after.saturating_sub(before) as f64 / sockets as f64;
        match limits {
            Some(limits) => println!("{limits:?}"),
            None => println!("opened as before"),
        }
        println!(
            "{sockets} sockets: VmRSS {before} KiB -> {after} KiB, {per_socket:.1} KiB per socket"
        );
        for task in tasks {
            task.abort();
        }
        Ok::<(), BoxError>(())
    }
    .await;
    let _ = server.kill();
    let _ = server.wait();
    outcome
}
