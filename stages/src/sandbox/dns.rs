//! Stage `dns`: writes the request's DNS lines as the guest's resolver configuration.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::context::SandboxContext;
use crate::error::StageError;
use crate::stage::{NoUndo, Stage, Undo};

/// Replaces the resolver configuration; undo puts the previous content back, or removes
/// the file when there was none.
#[derive(Debug)]
pub struct Dns {
    /// The guest's resolver configuration, `/etc/resolv.conf` in production.
    pub resolv_conf: PathBuf,
}

struct RestoreResolvConf {
    path: PathBuf,
    /// `None` when the file did not exist; taken by the first undo.
    previous: Option<Option<Vec<u8>>>,
}

impl Stage<SandboxContext> for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn apply(&self, ctx: &mut SandboxContext) -> Result<Box<dyn Undo>, StageError> {
        let lines = &ctx.request.dns;
        if lines.is_empty() {
            return Ok(Box::new(NoUndo));
        }
        for line in lines {
            if line.contains(['\n', '\r', '\0']) {
                return Err(StageError::invalid(
                    "DNS line",
                    line,
                    "must be one line without NUL bytes",
                ));
            }
        }

        let previous = match fs::read(&self.resolv_conf) {
            Ok(content) => Some(content),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(StageError::io("read", &self.resolv_conf, error)),
        };

        let mut content = lines.join("\n");
        content.push('\n');
        fs::write(&self.resolv_conf, content)
            .map_err(|error| StageError::io("write", &self.resolv_conf, error))?;

        Ok(Box::new(RestoreResolvConf {
            path: self.resolv_conf.clone(),
            previous: Some(previous),
        }))
    }
}

impl Undo for RestoreResolvConf {
    fn undo(&mut self) -> Result<(), StageError> {
        let Some(previous) = self.previous.take() else {
            return Ok(());
        };
        let result = match &previous {
            Some(content) => fs::write(&self.path, content),
            None => fs::remove_file(&self.path).or_else(|error| match error.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(error),
            }),
        };
        result.map_err(|error| StageError::io("restore", &self.path, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::request::SandboxRequest;
    use crate::testing::test_sandbox;

    fn context(root: &std::path::Path, dns: &[&str]) -> SandboxContext {
        SandboxContext {
            sandbox: test_sandbox(root).sandbox,
            request: SandboxRequest {
                dns: dns.iter().map(|line| line.to_string()).collect(),
                ..SandboxRequest::default()
            },
        }
    }

    #[test]
    fn lines_written_and_previous_restored() {
        let root = tempfile::tempdir().unwrap();
        let resolv_conf = root.path().join("resolv.conf");
        fs::write(&resolv_conf, "nameserver 192.0.2.1\n").unwrap();
        let stage = Dns {
            resolv_conf: resolv_conf.clone(),
        };
        let mut ctx = context(root.path(), &["nameserver 10.0.0.2", "search svc.local"]);

        let mut undo = stage.apply(&mut ctx).expect("resolver configured");
        assert_eq!(
            fs::read_to_string(&resolv_conf).unwrap(),
            "nameserver 10.0.0.2\nsearch svc.local\n"
        );
        undo.undo().expect("restored");
        fs::write(&resolv_conf, "changed later\n").unwrap();
        undo.undo().expect("second undo does nothing");

        assert_eq!(fs::read_to_string(&resolv_conf).unwrap(), "changed later\n");
    }

    #[test]
    fn file_created_is_removed() {
        let root = tempfile::tempdir().unwrap();
        let resolv_conf = root.path().join("resolv.conf");
        let stage = Dns {
            resolv_conf: resolv_conf.clone(),
        };
        let mut ctx = context(root.path(), &["nameserver 10.0.0.2"]);

        let mut undo = stage.apply(&mut ctx).expect("resolver configured");
        undo.undo().expect("restored");

        assert!(!resolv_conf.exists());
    }

    #[test]
    fn no_lines_change_nothing() {
        let root = tempfile::tempdir().unwrap();
        let resolv_conf = root.path().join("resolv.conf");
        let stage = Dns {
            resolv_conf: resolv_conf.clone(),
        };

        stage
            .apply(&mut context(root.path(), &[]))
            .expect("nothing to do");

        assert!(!resolv_conf.exists());
    }

    #[test]
    fn line_with_newline_rejected() {
        let root = tempfile::tempdir().unwrap();
        let resolv_conf = root.path().join("resolv.conf");
        let stage = Dns {
            resolv_conf: resolv_conf.clone(),
        };
        let mut ctx = context(root.path(), &["nameserver 10.0.0.2\nnameserver 6.6.6.6"]);

        let error = stage.apply(&mut ctx).err().expect("rejected");

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(!resolv_conf.exists());
    }
}
