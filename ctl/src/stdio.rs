//! Copying a container's stdio between the agent and `berth`'s own stdio: one task
//! per output stream and one for stdin, each a loop of RPCs.

use std::io::ErrorKind;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::client::{Agent, OutputStream};
use crate::error::{Error, Result};

/// Bytes read from stdin before each WriteStdin call.
const STDIN_CHUNK_LEN: usize = 32 * 1024;

/// Identifies the process whose stdio is copied.
#[derive(Debug, Clone)]
pub struct ProcessRef {
    pub container_id: String,
    pub exec_id: String,
}

/// Starts copying the process's `stream` to the same stream of `berth` until the
/// agent reports the end of the stream.
pub fn spawn_output_copy(
    agent: Agent,
    process: ProcessRef,
    stream: OutputStream,
) -> JoinHandle<Result<()>> {
    tokio::spawn(async move {
        match stream {
            OutputStream::Stdout => {
                copy_output(&agent, &process, stream, tokio::io::stdout()).await
            }
            OutputStream::Stderr => {
                copy_output(&agent, &process, stream, tokio::io::stderr()).await
            }
        }
    })
}

/// Starts copying `berth`'s stdin to the process, and closes the process's stdin when
/// `berth`'s stdin reaches its end.
pub fn spawn_stdin_copy(agent: Agent, process: ProcessRef) -> JoinHandle<Result<()>> {
    tokio::spawn(async move { copy_stdin(&agent, &process, tokio::io::stdin()).await })
}

async fn copy_output(
    agent: &Agent,
    process: &ProcessRef,
    stream: OutputStream,
    mut out: impl AsyncWrite + Unpin,
) -> Result<()> {
    let stream_name = stream_name(stream);
    let mut reader_gone = false;

    loop {
        let data = agent
            .read_output(stream, &process.container_id, &process.exec_id)
            .await?;
        if data.is_empty() {
            return Ok(());
        }

        // When the reader of our output went away (`berth run ... | head -1`), keep
        // reading and drop the data, because an unread stream fills the container's
        // pipe and would block the container forever.
        if reader_gone {
            continue;
        }

        let result = match out.write_all(&data).await {
            Ok(()) => out.flush().await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::BrokenPipe => reader_gone = true,
            Err(source) => {
                return Err(Error::WriteOutput {
                    stream: stream_name,
                    source,
                })
            }
        }
    }
}

async fn copy_stdin(
    agent: &Agent,
    process: &ProcessRef,
    mut input: impl AsyncRead + Unpin,
) -> Result<()> {
    let mut buffer = vec![0u8; STDIN_CHUNK_LEN];

    loop {
        let length = input
            .read(&mut buffer)
            .await
            .map_err(|source| Error::ReadStdin { source })?;
        if length == 0 {
            break;
        }

        write_all_stdin(agent, process, &buffer[..length]).await?;
    }

    agent
        .close_stdin(&process.container_id, &process.exec_id)
        .await
}

/// Sends `data` with as many WriteStdin calls as the agent needs to write all of it.
async fn write_all_stdin(agent: &Agent, process: &ProcessRef, mut data: &[u8]) -> Result<()> {
    while !data.is_empty() {
        let written = agent
            .write_stdin(&process.container_id, &process.exec_id, data)
            .await?;
        if written == 0 || written > data.len() {
            return Err(Error::StdinRejected {
                container_id: process.container_id.clone(),
                offered: data.len(),
                written,
            });
        }
        data = &data[written..];
    }
    Ok(())
}

fn stream_name(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_agent::{FakeAgent, Script};

    fn process() -> ProcessRef {
        ProcessRef {
            container_id: "c1".to_string(),
            exec_id: "c1".to_string(),
        }
    }

    #[tokio::test]
    async fn output_copied_until_empty_chunk() {
        let script = Script {
            stdout_chunks: [b"Hello ".to_vec(), b"from Berth\n".to_vec()].into(),
            ..Script::default()
        };
        let fake = FakeAgent::start(script).await;
        let agent = fake.connect().await;
        let mut out = Vec::new();

        copy_output(&agent, &process(), OutputStream::Stdout, &mut out)
            .await
            .unwrap();

        assert_eq!(out, b"Hello from Berth\n");
        assert_eq!(fake.calls(), ["ReadStdout", "ReadStdout", "ReadStdout"]);
    }

    #[tokio::test]
    async fn stdin_sent_in_parts_then_closed() {
        let script = Script {
            stdin_write_max: 3,
            ..Script::default()
        };
        let fake = FakeAgent::start(script).await;
        let agent = fake.connect().await;

        copy_stdin(&agent, &process(), &b"abcdefgh"[..])
            .await
            .unwrap();

        assert_eq!(fake.script.lock().unwrap().stdin_received, b"abcdefgh");
        assert_eq!(
            fake.calls(),
            ["WriteStdin", "WriteStdin", "WriteStdin", "CloseStdin"]
        );
    }

    #[tokio::test]
    async fn stdin_write_of_zero_bytes_is_an_error() {
        let fake = FakeAgent::start(Script::default()).await;
        let agent = fake.connect().await;

        let error = copy_stdin(&agent, &process(), &b"abc"[..])
            .await
            .unwrap_err();

        assert!(matches!(
            error,
            Error::StdinRejected {
                written: 0,
                offered: 3,
                ..
            }
        ));
        assert!(!fake.calls().contains(&"CloseStdin".to_string()));
    }

    #[tokio::test]
    async fn empty_stdin_only_closes() {
        let fake = FakeAgent::start(Script::default()).await;
        let agent = fake.connect().await;

        copy_stdin(&agent, &process(), &b""[..]).await.unwrap();

        assert_eq!(fake.calls(), ["CloseStdin"]);
    }
}
