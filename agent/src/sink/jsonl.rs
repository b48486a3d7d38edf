//! JSON lines sink: one flat JSON object per line, to stdout or appended to a file (created
//! with mode 0600).

use std::{path::PathBuf, sync::Arc};

use tokio::{
    fs::OpenOptions,
    io::{AsyncWrite, AsyncWriteExt, BufWriter},
    sync::mpsc,
};

use crate::record::Record;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    /// `-` means stdout.
    pub fn parse(s: &str) -> Self {
        if s == "-" {
            Destination::Stdout
        } else {
            Destination::File(PathBuf::from(s))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("cannot open JSON lines output {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing JSON lines output: {0}")]
    Write(#[from] std::io::Error),
}

/// An opened JSON lines destination.
pub struct JsonlSink {
    out: BufWriter<Box<dyn AsyncWrite + Unpin + Send>>,
}

impl JsonlSink {
    /// Opens the destination now, so a bad path fails at start rather than at the first event.
    pub async fn open(dest: &Destination) -> Result<Self, JsonlError> {
        let out: Box<dyn AsyncWrite + Unpin + Send> = match dest {
            Destination::Stdout => Box::new(tokio::io::stdout()),
            // Created owner-only: the records name workloads, files and destinations. An
            // existing file keeps its mode.
            Destination::File(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .await
                    .map_err(|source| JsonlError::Open {
                        path: path.clone(),
                        source,
                    })?,
            ),
        };
        Ok(Self {
            out: BufWriter::new(out),
        })
    }

    /// Writes records until every sender is gone; flushes whenever the queue runs empty so
    /// readers see events promptly.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Arc<Record>>) -> Result<(), JsonlError> {
        while let Some(record) = rx.recv().await {
            self.write(&record).await?;
            while let Ok(record) = rx.try_recv() {
                self.write(&record).await?;
            }
            self.out.flush().await?;
        }
        self.out.flush().await?;
        Ok(())
    }

    async fn write(&mut self, record: &Record) -> Result<(), JsonlError> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn a_created_file_is_owner_only_and_an_existing_one_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let created = dir.path().join("events.jsonl");
        JsonlSink::open(&Destination::File(created.clone()))
            .await
            .unwrap();
        assert_eq!(mode(&created), 0o600);

        let existing = dir.path().join("shared.jsonl");
        std::fs::write(&existing, "{}\n").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (tx, rx) = mpsc::channel(1);
        let sink = JsonlSink::open(&Destination::File(existing.clone()))
            .await
            .unwrap();
        drop(tx);
        sink.run(rx).await.unwrap();
        assert_eq!(mode(&existing), 0o644);
        // Appended to, not truncated.
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "{}\n");
    }
}
