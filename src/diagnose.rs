//! `upsim diagnose`: the root-cause report's step table, automated.
//!
//! Each step of the report's "Test Results Summary" runs against the real
//! admission code with the report's numbers (or others given), and prints
//! PASS or FAIL with the real cause — the cause the original manager hid
//! behind `return False`. Steps are independent: a failing step does not
//! stop the later ones, exactly like the report's table, so the table shows
//! which layer refuses and which do not.

use crate::admission::{
    Admission, AdmissionError, Admitter, Limits, MemoryBudget, Permits, SlotOutcome, SlotOwner,
    SlotRequest, UploadSlot,
};
use crate::env::{Clock, ManualClock, MemorySnapshot, ScriptedMemory, UtcDay};
use crate::profile::Profile;
use crate::units::{human_bytes, REFERENCE_FILE_SIZE_BYTES};
use crate::user::UserId;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

/// What to diagnose against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiagnoseInput {
    /// The file to upload.
    pub file_size_bytes: u64,
    /// The machine's memory.
    pub memory: MemorySnapshot,
    /// The uploading user.
    pub user: UserId,
}

impl DiagnoseInput {
    /// The report's numbers: 3457 MiB, 15.86 GB total, 3.15 GB available.
    pub fn reference() -> Self {
        Self {
            file_size_bytes: REFERENCE_FILE_SIZE_BYTES,
            memory: MemorySnapshot::REPORT,
            user: UserId::new("reference-user").expect("a valid literal user id"),
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The report's name for the step.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What was found, with numbers; for a failure, the real cause.
    pub detail: String,
    /// The typed cause of a failure, if admission produced one.
    pub cause: Option<AdmissionError>,
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    /// Which profile.
    pub profile: String,
    /// Against what.
    pub input: DiagnoseInput,
    /// The steps, in the report's order.
    pub steps: Vec<Step>,
}

impl Diagnosis {
    /// Whether every step passed.
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.passed)
    }

    /// The final verdict: the full admission's result.
    pub fn admission(&self) -> Option<&Step> {
        self.steps.last()
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let i = &self.input;
        let mut out = format!(
            "upsim diagnose: profile {}\nagainst: file {} bytes ({}); memory {}\n\n",
            self.profile,
            i.file_size_bytes,
            human_bytes(i.file_size_bytes),
            i.memory.describe()
        );
        out.push_str(&format!(" #  {:<26} {:<6} detail\n", "step", "result"));
        for (n, s) in self.steps.iter().enumerate() {
            let result = if s.passed { "PASS" } else { "FAIL" };
            out.push_str(&format!(
                "{:>2}  {:<26} {:<6} {}\n",
                n + 1,
                s.name,
                result,
                s.detail
            ));
        }
        let verdict = match self.admission() {
            Some(Step { passed: true, .. }) => {
                format!("\nverdict: profile {} ADMITS the upload\n", self.profile)
            }
            Some(Step { cause: Some(c), .. }) => {
                format!(
                    "\nverdict: profile {} REJECTS the upload: {} ({})\n",
                    self.profile,
                    c.cause(),
                    c
                )
            }
            _ => format!("\nverdict: profile {} REJECTS the upload\n", self.profile),
        };
        out.push_str(&verdict);
        out
    }
}

fn step(name: &'static str, result: Result<String, (String, Option<AdmissionError>)>) -> Step {
    match result {
        Ok(detail) => Step {
            name,
            passed: true,
            detail,
            cause: None,
        },
        Err((detail, cause)) => Step {
            name,
            passed: false,
            detail,
            cause,
        },
    }
}

/// Polls a future once: diagnosis runs on an idle system, where nothing
/// admission does should ever have to wait.
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

struct Discard(Arc<Permits>);

impl SlotOwner for Discard {
    fn release(&self, grant: crate::admission::Grant, _: SlotOutcome) {
        self.0.release(grant, true);
    }
}

/// Runs every step.
pub fn diagnose(profile: &Profile, input: &DiagnoseInput) -> Diagnosis {
    let mut steps = Vec::new();
    let required = profile
        .memory_per_upload
        .required_bytes(input.file_size_bytes, profile.chunk_size_bytes);

    // 1. Configuration validation.
    let valid = profile.validate();
    steps.push(step(
        "configuration validation",
        valid
            .clone()
            .map(|()| format!("profile {} is valid", profile.name))
            .map_err(|e| (e.to_string(), None)),
    ));
    if valid.is_err() {
        return Diagnosis {
            profile: profile.name.clone(),
            input: input.clone(),
            steps,
        };
    }

    // 2.–6., each in its own function below.
    steps.push(limits_step(profile, input));
    steps.push(memory_step(profile, input, required));
    steps.extend(slot_steps(profile, input));
    steps.push(admission_step(profile, input));

    Diagnosis {
        profile: profile.name.clone(),
        input: input.clone(),
        steps,
    }
}

/// 2. Upload limits check (size bounds and the daily quota, nothing charged yet).
fn limits_step(profile: &Profile, input: &DiagnoseInput) -> Step {
    let limits = if input.file_size_bytes == 0 {
        Err(AdmissionError::EmptyFile)
    } else if input.file_size_bytes > profile.file_size_bytes_max {
        Err(AdmissionError::FileTooLarge {
            file_size_bytes: input.file_size_bytes,
            file_size_bytes_max: profile.file_size_bytes_max,
        })
    } else if profile.upload_limits_enabled && input.file_size_bytes > profile.daily_limit_bytes {
        Err(AdmissionError::QuotaExceeded {
            user: input.user.clone(),
            day: UtcDay(0),
            charged_bytes: 0,
            requested_bytes: input.file_size_bytes,
            daily_limit_bytes: profile.daily_limit_bytes,
        })
    } else if profile.upload_limits_enabled {
        Ok(format!(
            "{} of the {} daily limit",
            human_bytes(input.file_size_bytes),
            human_bytes(profile.daily_limit_bytes)
        ))
    } else {
        Ok("upload limits disabled in this profile".to_owned())
    };
    step(
        "upload limits check",
        limits.map_err(|e| (e.to_string(), Some(e))),
    )
}

/// 3. Memory availability under the profile's limit and reserve.
fn memory_step(profile: &Profile, input: &DiagnoseInput, required: u64) -> Step {
    let budget = MemoryBudget::of(profile, &input.memory);
    let memory = if required <= budget.headroom_bytes {
        Ok(format!(
            "requires {}; {} may be reserved under the {} % limit",
            human_bytes(required),
            human_bytes(budget.headroom_bytes),
            profile.memory_limit_percent
        ))
    } else {
        let e = budget.pressure(profile, &input.memory, required, 0);
        Err((e.to_string(), Some(e)))
    };
    step("memory availability", memory)
}

/// 4. Slot acquisition: the global and user slot alone, in one step; and
/// 5. slot creation: an UploadSlot wraps the grant and releases it once.
fn slot_steps(profile: &Profile, input: &DiagnoseInput) -> [Step; 2] {
    let permits = Permits::new(Limits {
        global_slots: profile.global_slots,
        user_slots: profile.user_slots,
        memory_budget_bytes: u64::MAX,
        waiters_max: profile.waiters_max,
        daily_limit_bytes: None,
    });
    let slots_only = SlotRequest {
        user: input.user.clone(),
        memory_bytes: 0,
        memory_ceiling_bytes: u64::MAX,
        quota_bytes: 0,
        day: UtcDay(0),
    };
    let grant = match permits.request(slots_only) {
        Ok(acquire) => poll_once(acquire),
        Err(_) => None,
    };
    let state = permits.state();
    let acquired = step(
        "slot acquisition",
        match &grant {
            Some(_) => Ok(format!(
                "global {}/{} and user {}/{} taken in one step",
                state.global_in_use,
                profile.global_slots,
                state.user_in_use.get(&input.user).copied().unwrap_or(0),
                profile.user_slots
            )),
            None => Err((
                "the slots could not be taken on an idle system".to_owned(),
                None,
            )),
        },
    );
    let released = grant.map(|g| {
        let slot = UploadSlot::new(
            g,
            Arc::new(Discard(permits.clone())),
            input.file_size_bytes,
            Duration::ZERO,
        );
        drop(slot);
        (permits.state().is_idle(), permits.check())
    });
    let created = step(
        "slot creation",
        match released {
            Some((true, Ok(()))) => {
                Ok("UploadSlot created and released exactly once; nothing left held".to_owned())
            }
            Some((_, Err(v))) => Err((format!("invariant broken: {v}"), None)),
            Some((false, Ok(()))) => Err(("resources left held after release".to_owned(), None)),
            None => Err(("no grant to wrap".to_owned(), None)),
        },
    );
    [acquired, created]
}

/// 6. The full admission, exactly as the server runs it.
fn admission_step(profile: &Profile, input: &DiagnoseInput) -> Step {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(UNIX_EPOCH));
    let probe = Arc::new(ScriptedMemory::new(clock.clone(), input.memory));
    let admitter = Admitter::new(profile.clone(), clock, probe);
    let admitted = poll_once(admitter.admit(input.user.clone(), input.file_size_bytes));
    let full = match admitted {
        Some(Ok(slot)) => {
            let detail = format!(
                "admitted: {} reserved, waited {} ms",
                human_bytes(slot.memory_bytes()),
                slot.waited().as_millis()
            );
            slot.complete();
            match (admitter.state().ledger.global_in_use, admitter.check()) {
                (0, Ok(())) => Ok(detail),
                (_, Err(v)) => Err((format!("invariant broken: {v}"), None)),
                (n, Ok(())) => Err((format!("{n} slots left held after release"), None)),
            }
        }
        Some(Err(e)) => Err((e.to_string(), Some(e))),
        None => Err(("admission waited on an idle system".to_owned(), None)),
    };
    step("full admission", full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::MIB;

    #[test]
    fn dev_admits_the_reference_upload() {
        let d = diagnose(&Profile::dev(), &DiagnoseInput::reference());
        assert!(d.passed(), "{}", d.render());
        assert!(d.render().contains("verdict: profile dev ADMITS"));
        assert!(
            d.steps[2].detail.contains("requires 345.70 MB"),
            "{}",
            d.steps[2].detail
        );
    }

    #[test]
    fn prod_rejects_it_for_memory_with_the_numbers() {
        let d = diagnose(&Profile::prod(), &DiagnoseInput::reference());
        assert!(!d.passed());
        let names: Vec<(&str, bool)> = d.steps.iter().map(|s| (s.name, s.passed)).collect();
        assert_eq!(
            names,
            [
                ("configuration validation", true),
                ("upload limits check", true),
                ("memory availability", false),
                ("slot acquisition", true),
                ("slot creation", true),
                ("full admission", false),
            ]
        );
        let full = d.admission().expect("six steps");
        match &full.cause {
            Some(AdmissionError::MemoryPressure {
                used_permille,
                limit_percent,
                required_bytes,
                reserve_bytes,
                headroom_bytes,
                ..
            }) => {
                assert_eq!((*used_permille, *limit_percent), (802, 80));
                assert_eq!(*required_bytes, 3457 * MIB / 10);
                assert_eq!(*reserve_bytes, 512 * MIB);
                assert_eq!(*headroom_bytes, 0);
            }
            other => panic!("expected MemoryPressure, got {other:?}"),
        }
        let text = d.render();
        assert!(text.contains("80.2 % of memory in use"), "{text}");
        assert!(text.contains("the limit is 80 %"), "{text}");
        assert!(
            text.contains("REJECTS the upload: memory_pressure"),
            "{text}"
        );
    }

    #[test]
    fn a_file_over_the_daily_limit_fails_the_limits_step() {
        let input = DiagnoseInput {
            file_size_bytes: 6 * 1024 * MIB,
            memory: MemorySnapshot::new(64 * 1024 * MIB, 60 * 1024 * MIB).expect("valid figures"),
            ..DiagnoseInput::reference()
        };
        let d = diagnose(&Profile::prod(), &input);
        assert!(
            matches!(d.steps[1].cause, Some(AdmissionError::QuotaExceeded { .. })),
            "{}",
            d.render()
        );
        assert!(
            matches!(d.steps[5].cause, Some(AdmissionError::QuotaExceeded { .. })),
            "{}",
            d.render()
        );
        let empty = DiagnoseInput {
            file_size_bytes: 0,
            ..DiagnoseInput::reference()
        };
        let d = diagnose(&Profile::dev(), &empty);
        assert_eq!(d.steps[1].cause, Some(AdmissionError::EmptyFile));
        assert_eq!(d.steps[5].cause, Some(AdmissionError::EmptyFile));
    }

    #[test]
    fn an_invalid_profile_stops_at_validation() {
        let mut p = Profile::dev();
        p.global_slots = 0;
        let d = diagnose(&p, &DiagnoseInput::reference());
        assert_eq!(d.steps.len(), 1);
        assert!(!d.passed());
        assert!(d.steps[0].detail.contains("global_slots"));
    }
}
