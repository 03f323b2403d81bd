//! Stdio throughput: bytes through ReadStdout and WriteStdin, next to the same bytes
//! through a plain pipe between two busybox processes on this machine.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{AgentClient, ContainerTemplate};
use crate::error::{BenchError, Result};

/// Bytes requested by each ReadStdout. The agent returns at most what the pipe contains
/// (64 KiB by default), so a larger request costs nothing.
const READ_LEN: u32 = 1024 * 1024;

/// Bytes sent by each WriteStdin, well below the 4 MiB ttRPC message limit.
const WRITE_CHUNK: usize = 1024 * 1024;

/// One throughput measurement: Berth and the plain pipe, run back to back.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub bytes: u64,
    pub berth: Duration,
    pub pipe: Duration,
}

impl Throughput {
    pub fn berth_mib_per_sec(&self) -> f64 {
        mib_per_sec(self.bytes, self.berth)
    }

    pub fn pipe_mib_per_sec(&self) -> f64 {
        mib_per_sec(self.bytes, self.pipe)
    }

    /// Berth's throughput as a fraction of the plain pipe's.
    pub fn ratio(&self) -> f64 {
        self.pipe.as_secs_f64() / self.berth.as_secs_f64()
    }
}

pub fn mib_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

/// Measures a container writing `bytes` zeros to stdout, read through ReadStdout from
/// StartContainer until end of file, then the plain pipe with the same bytes.
pub async fn measure_stdout(
    client: &AgentClient,
    template: &ContainerTemplate,
    busybox: &Path,
    id: &str,
    bytes: u64,
) -> Result<Throughput> {
    let count = bytes.to_string();
    client
        .create_container(&template.request(id, &["head", "-c", &count, "/dev/zero"]))
        .await?;

    let started = Instant::now();
    client.start_container(id).await?;
    let mut received: u64 = 0;
    loop {
        let data = client.read_stdout(id, READ_LEN).await?;
        if data.is_empty() {
            break;
        }
        received += data.len() as u64;
    }
    let berth = started.elapsed();

    finish(client, id).await?;
    check_count(id, "stdout", bytes, received)?;

    Ok(Throughput {
        bytes,
        berth,
        pipe: time_plain_pipe(busybox, bytes)?,
    })
}

/// Measures `bytes` pushed through WriteStdin into `wc -c` in a container, from the
/// first write until WaitProcess returns after CloseStdin. The count that `wc` prints
/// checks that every byte arrived. Then the plain pipe with the same bytes.
pub async fn measure_stdin(
    client: &AgentClient,
    template: &ContainerTemplate,
    busybox: &Path,
    id: &str,
    bytes: u64,
) -> Result<Throughput> {
    client
        .create_container(&template.request(id, &["wc", "-c"]))
        .await?;
    client.start_container(id).await?;
    let chunk = vec![0u8; WRITE_CHUNK];

    let started = Instant::now();
    let mut sent: u64 = 0;
    while sent < bytes {
        let len = (bytes - sent).min(WRITE_CHUNK as u64) as usize;
        let written = client.write_stdin(id, chunk[..len].to_vec()).await?;
        sent += u64::from(written);
    }
    client.close_stdin(id).await?;
    let status = client.wait_process(id).await?;
    let berth = started.elapsed();

    let output = client.read_stdout(id, READ_LEN).await?;
    client.remove_container(id).await?;
    if status != 0 {
        return Err(BenchError::ContainerStatus {
            container: id.to_string(),
            status,
        });
    }
    let counted = String::from_utf8_lossy(&output).trim().parse().unwrap_or(0);
    check_count(id, "stdin", bytes, counted)?;

    Ok(Throughput {
        bytes,
        berth,
        pipe: time_plain_pipe(busybox, bytes)?,
    })
}

/// Times `busybox head -c BYTES /dev/zero | busybox cat >/dev/null` in a busybox shell:
/// the same programs as in the container, joined by nothing but a pipe.
pub fn time_plain_pipe(busybox: &Path, bytes: u64) -> Result<Duration> {
    let script = format!(
        "{0} head -c {bytes} /dev/zero | {0} cat >/dev/null",
        busybox.display()
    );

    let started = Instant::now();
    let status = Command::new(busybox)
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|source| BenchError::Spawn {
            program: busybox.to_path_buf(),
            source,
        })?;
    let elapsed = started.elapsed();

    if !status.success() {
        return Err(BenchError::CommandFailed {
            command: script,
            status,
        });
    }
    Ok(elapsed)
}

async fn finish(client: &AgentClient, id: &str) -> Result<()> {
    let status = client.wait_process(id).await?;
    client.remove_container(id).await?;

    if status != 0 {
        return Err(BenchError::ContainerStatus {
            container: id.to_string(),
            status,
        });
    }
    Ok(())
}

fn check_count(id: &str, stream: &'static str, expected: u64, actual: u64) -> Result<()> {
    if actual != expected {
        return Err(BenchError::ShortTransfer {
            container: id.to_string(),
            stream,
            expected,
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_ratio_is_berth_over_pipe() {
        let measured = Throughput {
            bytes: 256 * 1024 * 1024,
            berth: Duration::from_secs(2),
            pipe: Duration::from_secs(1),
        };

        assert_eq!(measured.berth_mib_per_sec(), 128.0);
        assert_eq!(measured.pipe_mib_per_sec(), 256.0);
        assert_eq!(measured.ratio(), 0.5);
    }

    #[test]
    fn plain_pipe_moves_bytes() {
        let busybox = Path::new("/bin/busybox");
        assert!(busybox.exists(), "busybox-static is needed, see ci/deps.sh");

        let elapsed = time_plain_pipe(busybox, 1024 * 1024).unwrap();

        assert!(elapsed > Duration::ZERO);
    }

    #[test]
    fn short_transfer_names_container_and_counts() {
        let error = check_count("c1", "stdout", 10, 4).unwrap_err();

        let message = error.to_string();
        assert!(message.contains("c1"), "{message}");
        assert!(message.contains("4 bytes"), "{message}");
        assert!(message.contains("expected 10"), "{message}");
    }
}
