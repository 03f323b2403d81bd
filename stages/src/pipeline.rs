//! Runs stages in order and rolls back on failure.
//!
//! Invariant: when [`Pipeline::run`] returns an error, every stage that completed has been
//! undone, best effort, with every undo failure reported. When it returns [`Completed`],
//! the caller owns the undo records and tears down through [`Completed::undo_all`].

use std::fmt;
use std::time::{Duration, Instant};

use slog::{debug, Logger};

use crate::error::StageError;
use crate::stage::{Stage, Undo};

/// An ordered list of stages over a context `C`.
pub struct Pipeline<C> {
    stages: Vec<Box<dyn Stage<C>>>,
}

/// The undo records of a pipeline that ran to the end, with each stage's duration.
pub struct Completed {
    undos: Vec<(&'static str, Box<dyn Undo>)>,
    timings: Vec<(&'static str, Duration)>,
}

/// A failed pipeline run: the stage that failed, its error, and the failures of the
/// rollback that followed.
#[derive(Debug)]
pub struct PipelineError {
    pub stage: &'static str,
    pub source: StageError,
    pub undo_errors: Vec<(&'static str, StageError)>,
    pub timings: Vec<(&'static str, Duration)>,
}

/// The failures of [`Completed::undo_all`], each with its stage name, in undo order.
#[derive(Debug)]
pub struct UndoErrors(pub Vec<(&'static str, StageError)>);

impl<C> Pipeline<C> {
    /// Creates a pipeline that runs `stages` in the given order.
    pub fn new(stages: Vec<Box<dyn Stage<C>>>) -> Self {
        Pipeline { stages }
    }

    /// Returns the stage names in run order.
    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|stage| stage.name()).collect()
    }

    /// Runs every stage on `ctx`, timing each. On the first failure, undoes the stages
    /// that completed, in reverse order, and returns the failure with the stage's name.
    // The error is large because it carries the rollback failures and timings. It is
    // built once per failed request, so boxing it would only complicate the callers.
    #[allow(clippy::result_large_err)]
    pub fn run(&self, ctx: &mut C, logger: &Logger) -> Result<Completed, PipelineError> {
        let mut completed = Completed {
            undos: Vec::with_capacity(self.stages.len()),
            timings: Vec::with_capacity(self.stages.len()),
        };

        for stage in &self.stages {
            let name = stage.name();
            let started = Instant::now();
            let result = stage.apply(ctx);
            let elapsed = started.elapsed();
            completed.timings.push((name, elapsed));
            debug!(logger, "stage finished";
                "stage" => name,
                "duration_us" => elapsed.as_micros() as u64,
                "ok" => result.is_ok());

            match result {
                Ok(undo) => completed.undos.push((name, undo)),
                Err(source) => {
                    let undo_errors = match completed.undo_all(logger) {
                        Ok(()) => Vec::new(),
                        Err(UndoErrors(errors)) => errors,
                    };
                    return Err(PipelineError {
                        stage: name,
                        source,
                        undo_errors,
                        timings: completed.timings,
                    });
                }
            }
        }

        Ok(completed)
    }
}

impl Completed {
    /// Returns the duration of each stage that ran, in run order.
    pub fn timings(&self) -> &[(&'static str, Duration)] {
        &self.timings
    }

    /// Returns the names of the stages whose undo has not run yet, in run order.
    pub fn pending_undos(&self) -> Vec<&'static str> {
        self.undos.iter().map(|(name, _)| *name).collect()
    }

    /// Undoes every stage in reverse order. Runs every undo even when some fail and
    /// returns all failures. The records are consumed, so a second call does nothing.
    pub fn undo_all(&mut self, logger: &Logger) -> Result<(), UndoErrors> {
        let mut errors = Vec::new();

        while let Some((name, mut undo)) = self.undos.pop() {
            let started = Instant::now();
            let result = undo.undo();
            debug!(logger, "stage undone";
                "stage" => name,
                "duration_us" => started.elapsed().as_micros() as u64,
                "ok" => result.is_ok());
            if let Err(error) = result {
                errors.push((name, error));
            }
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(UndoErrors(errors))
        }
    }
}

impl fmt::Debug for Completed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completed")
            .field("pending_undos", &self.pending_undos())
            .field("timings", &self.timings)
            .finish()
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage {}: {}", self.stage, self.source)?;
        if !self.undo_errors.is_empty() {
            write!(f, "; rollback also failed: ")?;
            write_stage_errors(f, &self.undo_errors)?;
        }
        Ok(())
    }
}

impl std::error::Error for PipelineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl PipelineError {
    /// Returns the status class of the failure that stopped the pipeline.
    pub fn code(&self) -> crate::ErrorCode {
        self.source.code()
    }
}

impl fmt::Display for UndoErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "undo failed: ")?;
        write_stage_errors(f, &self.0)
    }
}

impl std::error::Error for UndoErrors {}

/// Writes `undo NAME: ERROR` entries separated by "; ".
fn write_stage_errors(
    f: &mut fmt::Formatter<'_>,
    errors: &[(&'static str, StageError)],
) -> fmt::Result {
    for (index, (name, error)) in errors.iter().enumerate() {
        if index > 0 {
            write!(f, "; ")?;
        }
        write!(f, "undo {name}: {error}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::error::ErrorCode;

    /// The journal that test stages and their undos write to, in call order.
    type Journal = Arc<Mutex<Vec<String>>>;

    /// Applies by writing "apply NAME"; its undo writes "undo NAME" and may fail.
    struct Recording {
        name: &'static str,
        fail_undo: bool,
    }

    /// Changes something ("apply NAME partial"), then fails, as a stage that undid its
    /// own partial work would ("undo NAME partial").
    struct FailsHalfway {
        name: &'static str,
    }

    struct RecordingUndo {
        journal: Journal,
        name: &'static str,
        fail: bool,
        done: bool,
    }

    impl Stage<Journal> for Recording {
        fn name(&self) -> &'static str {
            self.name
        }

        fn apply(&self, journal: &mut Journal) -> Result<Box<dyn Undo>, StageError> {
            journal.lock().unwrap().push(format!("apply {}", self.name));
            Ok(Box::new(RecordingUndo {
                journal: Arc::clone(journal),
                name: self.name,
                fail: self.fail_undo,
                done: false,
            }))
        }
    }

    impl Stage<Journal> for FailsHalfway {
        fn name(&self) -> &'static str {
            self.name
        }

        fn apply(&self, journal: &mut Journal) -> Result<Box<dyn Undo>, StageError> {
            let mut entries = journal.lock().unwrap();
            entries.push(format!("apply {} partial", self.name));
            entries.push(format!("undo {} partial", self.name));
            Err(StageError::invalid(
                "test value",
                "/dev/vdb",
                "injected failure",
            ))
        }
    }

    impl Undo for RecordingUndo {
        fn undo(&mut self) -> Result<(), StageError> {
            if self.done {
                return Ok(());
            }
            self.done = true;
            self.journal
                .lock()
                .unwrap()
                .push(format!("undo {}", self.name));
            if self.fail {
                let error = std::io::Error::from_raw_os_error(libc::EBUSY);
                return Err(StageError::io(
                    "remove",
                    format!("/run/{}", self.name),
                    error,
                ));
            }
            Ok(())
        }
    }

    fn ok(name: &'static str) -> Box<dyn Stage<Journal>> {
        Box::new(Recording {
            name,
            fail_undo: false,
        })
    }

    fn undo_fails(name: &'static str) -> Box<dyn Stage<Journal>> {
        Box::new(Recording {
            name,
            fail_undo: true,
        })
    }

    fn fails(name: &'static str) -> Box<dyn Stage<Journal>> {
        Box::new(FailsHalfway { name })
    }

    fn logger() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    fn entries(journal: &Journal) -> Vec<String> {
        journal.lock().unwrap().clone()
    }

    #[test]
    fn run_applies_stages_in_order() {
        let pipeline = Pipeline::new(vec![ok("a"), ok("b"), ok("c")]);
        let mut journal = Journal::default();

        let completed = pipeline
            .run(&mut journal, &logger())
            .expect("pipeline runs");

        assert_eq!(entries(&journal), ["apply a", "apply b", "apply c"]);
        assert_eq!(pipeline.stage_names(), ["a", "b", "c"]);
        assert_eq!(completed.pending_undos(), ["a", "b", "c"]);
    }

    #[test]
    fn run_records_timing_per_stage() {
        let pipeline = Pipeline::new(vec![ok("a"), ok("b")]);
        let mut journal = Journal::default();

        let completed = pipeline
            .run(&mut journal, &logger())
            .expect("pipeline runs");

        let names: Vec<&str> = completed.timings().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn run_logs_stage_and_duration() {
        let records = crate::testing::Records::default();
        let logger = Logger::root(slog::Fuse(records.clone()), slog::o!());
        let pipeline = Pipeline::new(vec![ok("a")]);

        pipeline
            .run(&mut Journal::default(), &logger)
            .expect("pipeline runs");

        let lines = records.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(" stage=a"), "{lines:?}");
        assert!(lines[0].contains(" duration_us="), "{lines:?}");
    }

    #[test]
    fn failure_undoes_earlier_stages_in_reverse() {
        let pipeline = Pipeline::new(vec![ok("a"), ok("b"), fails("c"), ok("d")]);
        let mut journal = Journal::default();

        let error = pipeline
            .run(&mut journal, &logger())
            .expect_err("stage c fails");

        assert_eq!(
            entries(&journal),
            [
                "apply a",
                "apply b",
                "apply c partial",
                "undo c partial",
                "undo b",
                "undo a"
            ]
        );
        assert_eq!(error.stage, "c");
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(error.undo_errors.is_empty());
        assert_eq!(error.timings.len(), 3);
        assert_eq!(
            error.to_string(),
            "stage c: invalid test value \"/dev/vdb\": injected failure"
        );
    }

    #[test]
    fn first_stage_failure_undoes_nothing() {
        let pipeline = Pipeline::new(vec![fails("a"), ok("b")]);
        let mut journal = Journal::default();

        let error = pipeline
            .run(&mut journal, &logger())
            .expect_err("stage a fails");

        assert_eq!(entries(&journal), ["apply a partial", "undo a partial"]);
        assert_eq!(error.stage, "a");
    }

    #[test]
    fn undo_errors_reported_with_original() {
        let pipeline = Pipeline::new(vec![undo_fails("a"), ok("b"), undo_fails("c"), fails("d")]);
        let mut journal = Journal::default();

        let error = pipeline
            .run(&mut journal, &logger())
            .expect_err("stage d fails");

        // Every undo ran even though two failed.
        assert_eq!(
            entries(&journal),
            [
                "apply a",
                "apply b",
                "apply c",
                "apply d partial",
                "undo d partial",
                "undo c",
                "undo b",
                "undo a"
            ]
        );
        assert_eq!(error.stage, "d");
        let failed: Vec<&str> = error.undo_errors.iter().map(|(name, _)| *name).collect();
        assert_eq!(failed, ["c", "a"]);
        let message = error.to_string();
        assert!(
            message.starts_with("stage d: invalid test value"),
            "{message}"
        );
        assert!(message.contains("undo c: remove /run/c:"), "{message}");
        assert!(message.contains("undo a: remove /run/a:"), "{message}");
    }

    #[test]
    fn undo_all_reverses_and_is_idempotent() {
        let pipeline = Pipeline::new(vec![ok("a"), undo_fails("b"), ok("c")]);
        let mut journal = Journal::default();
        let mut completed = pipeline
            .run(&mut journal, &logger())
            .expect("pipeline runs");

        let first = completed.undo_all(&logger());
        let second = completed.undo_all(&logger());

        let errors = first.expect_err("undo of b fails");
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].0, "b");
        assert!(second.is_ok());
        assert!(completed.pending_undos().is_empty());
        assert_eq!(
            entries(&journal),
            ["apply a", "apply b", "apply c", "undo c", "undo b", "undo a"]
        );
    }
}
