//! Crash recovery (after sled's `test_crash_recovery.rs`): a python writer
//! PUTs objects from 8 threads and prints `ACK n` after every 200; the test
//! SIGKILLs strata at a random moment, restarts it on the same data and
//! checks that every acknowledged object reads back byte-identical and that
//! no listed object is partial. Three rounds, each overwriting the keys of
//! the previous ones with new content.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::Rng;
use strata_tests::{KillOnDrop, Server, unique_bucket, utf8};

const ROUNDS: u32 = 3;
/// Time for the writer to reach its ACK threshold.
const ACK_TIMEOUT: Duration = Duration::from_secs(180);
/// Time for the writer to notice the server is gone and exit.
const WRITER_EXIT_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn sigkill_during_concurrent_puts() -> Result<()> {
    let mut server = Server::start()?;
    let bucket = unique_bucket("crash");
    let work = server.work_dir("crash")?;
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;

    // Key -> last generation whose write of it was acknowledged.
    let mut last_acked: BTreeMap<String, u32> = BTreeMap::new();
    let mut rng = rand::rng();
    for generation in 0..ROUNDS {
        let ack_threshold = rng.random_range(4..=24);
        let delay = Duration::from_millis(rng.random_range(0..300));
        let acked = write_until_killed(&mut server, &bucket, generation, ack_threshold, delay)?;
        for n in acked {
            last_acked.insert(format!("obj-{n:05}"), generation);
        }
        server
            .restart()
            .with_context(|| format!("restarting after the SIGKILL of round {generation}"))?;
        verify(&server, &bucket, &last_acked, generation, &work)
            .with_context(|| format!("after the SIGKILL of round {generation}"))?;
    }

    // A clean stop and start changes nothing either.
    server.restart()?;
    verify(&server, &bucket, &last_acked, ROUNDS - 1, &work).context("after a clean restart")?;
    server.assert_healthy()?;
    Ok(())
}

/// Runs `crash_writer.py` for `generation` until it has printed
/// `ack_threshold` ACKs, waits `delay`, SIGKILLs the server and returns every
/// object number the writer saw acknowledged, including those whose ACK
/// arrived while the kill was under way.
fn write_until_killed(
    server: &mut Server,
    bucket: &str,
    generation: u32,
    ack_threshold: usize,
    delay: Duration,
) -> Result<Vec<u32>> {
    let mut command = server.python_command("crash_writer.py", &[bucket, &generation.to_string()]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut writer = KillOnDrop(
        command
            .spawn()
            .context("spawning `python3 crash_writer.py` (is python3 installed?)")?,
    );
    let stdout = writer
        .0
        .stdout
        .take()
        .context("writer stdout not captured")?;
    let mut stderr = writer
        .0
        .stderr
        .take()
        .context("writer stderr not captured")?;
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (ack_tx, ack_rx) = mpsc::channel::<u32>();
    let stdout_reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line
                .strip_prefix("ACK ")
                .and_then(|n| n.trim().parse().ok())
                && ack_tx.send(n).is_err()
            {
                break;
            }
        }
    });

    let mut acked = Vec::new();
    let deadline = Instant::now() + ACK_TIMEOUT;
    while acked.len() < ack_threshold {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match ack_rx.recv_timeout(remaining) {
            Ok(n) => acked.push(n),
            Err(RecvTimeoutError::Timeout) => {
                bail!(
                    "round {generation}: only {} of {ack_threshold} ACKs within {ACK_TIMEOUT:?}",
                    acked.len()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = writer.0.wait()?;
                let stderr = stderr_reader.join().unwrap_or_default();
                bail!(
                    "round {generation}: the writer stopped ({status}) after {} ACKs, before the kill; stderr:\n{stderr}",
                    acked.len()
                )
            }
        }
    }
    thread::sleep(delay);
    server.kill9()?;

    let exit_deadline = Instant::now() + WRITER_EXIT_TIMEOUT;
    while writer.0.try_wait()?.is_none() {
        if Instant::now() > exit_deadline {
            bail!(
                "round {generation}: the writer did not exit within {WRITER_EXIT_TIMEOUT:?} of the kill"
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = stdout_reader.join();
    acked.extend(ack_rx.try_iter());
    let stderr = stderr_reader.join().unwrap_or_default();
    let n_errors = stderr
        .lines()
        .filter(|line| line.starts_with("ERR "))
        .count();
    eprintln!(
        "round {generation}: SIGKILL after {ack_threshold} ACKs + {delay:?}; {} ACKs in all, {n_errors} writes failed",
        acked.len()
    );
    Ok(acked)
}

fn verify(
    server: &Server,
    bucket: &str,
    last_acked: &BTreeMap<String, u32>,
    generation: u32,
    work: &std::path::Path,
) -> Result<()> {
    let acks_path = work.join(format!("acks-{generation}.json"));
    fs::write(&acks_path, serde_json::to_string(last_acked)?)?;
    let output = server.python_ok(
        "crash_verify.py",
        &[bucket, utf8(&acks_path)?, &generation.to_string()],
    )?;
    eprint!("{}", output.stdout_text());
    Ok(())
}
