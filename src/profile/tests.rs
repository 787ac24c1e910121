//! Unit tests of [`profile`](super), apart so the module itself stays short.

use super::*;

fn invalid_field(p: &Profile) -> Option<&'static str> {
    match p.validate() {
        Err(ProfileError::Invalid { field, .. }) => Some(field),
        _ => None,
    }
}

#[test]
fn builtins_are_valid_and_carry_the_reports_values() {
    let (dev, prod) = (Profile::dev(), Profile::prod());
    assert_eq!(dev.validate(), Ok(()));
    assert_eq!(prod.validate(), Ok(()));
    assert!(!dev.upload_limits_enabled && prod.upload_limits_enabled);
    assert_eq!(
        (dev.memory_limit_percent, prod.memory_limit_percent),
        (100, 80)
    );
    assert_eq!(
        (dev.reserved_memory_bytes, prod.reserved_memory_bytes),
        (0, 512 * MIB)
    );
    assert_eq!((prod.global_slots, prod.user_slots), (20, 5));
    assert_eq!(prod.daily_limit_bytes, 5 * GIB);
    let required = prod.memory_per_upload.required_bytes(
        crate::units::REFERENCE_FILE_SIZE_BYTES,
        prod.chunk_size_bytes,
    );
    assert_eq!(crate::units::human_bytes(required), "345.70 MB");
}

#[test]
fn toml_round_trips() {
    for p in [Profile::dev(), Profile::prod()] {
        assert_eq!(Profile::from_toml(&p.to_toml(), "test"), Ok(p));
    }
}

#[test]
fn every_validation_error_names_its_field() {
    type Breaker = Box<dyn Fn(&mut Profile)>;
    let cases: Vec<(&str, Breaker)> = vec![
        ("name", Box::new(|p| p.name.clear())),
        ("daily_limit_bytes", Box::new(|p| p.daily_limit_bytes = 0)),
        (
            "file_size_bytes_max",
            Box::new(|p| p.file_size_bytes_max = 0),
        ),
        (
            "file_size_bytes_max",
            Box::new(|p| p.file_size_bytes_max = u64::MAX),
        ),
        (
            "memory_limit_percent",
            Box::new(|p| p.memory_limit_percent = 0),
        ),
        (
            "memory_limit_percent",
            Box::new(|p| p.memory_limit_percent = 101),
        ),
        (
            "reserved_memory_bytes",
            Box::new(|p| p.reserved_memory_bytes = u64::MAX),
        ),
        ("global_slots", Box::new(|p| p.global_slots = 0)),
        ("global_slots", Box::new(|p| p.global_slots = SLOTS_MAX + 1)),
        ("user_slots", Box::new(|p| p.user_slots = 0)),
        (
            "user_slots",
            Box::new(|p| p.user_slots = p.global_slots + 1),
        ),
        ("chunk_size_bytes", Box::new(|p| p.chunk_size_bytes = 0)),
        (
            "chunk_size_bytes",
            Box::new(|p| p.chunk_size_bytes = 1_000_000),
        ),
        (
            "chunk_size_bytes",
            Box::new(|p| p.chunk_size_bytes = 512 * MIB),
        ),
        (
            "memory_per_upload.percent",
            Box::new(|p| p.memory_per_upload = MemoryPolicy::PercentOfFile { percent: 0 }),
        ),
        (
            "memory_per_upload.percent",
            Box::new(|p| p.memory_per_upload = MemoryPolicy::PercentOfFile { percent: 150 }),
        ),
        (
            "memory_per_upload.bytes",
            Box::new(|p| p.memory_per_upload = MemoryPolicy::Fixed { bytes: 0 }),
        ),
        (
            "memory_per_upload.chunks",
            Box::new(|p| p.memory_per_upload = MemoryPolicy::ChunkWindow { chunks: 0 }),
        ),
        (
            "slot_wait_timeout_ms",
            Box::new(|p| p.slot_wait_timeout_ms = 0),
        ),
        (
            "waiters_max",
            Box::new(|p| p.waiters_max = WAITERS_MAX_LIMIT + 1),
        ),
        ("retry.attempts_max", Box::new(|p| p.retry.attempts_max = 0)),
        (
            "retry.backoff_ms_min",
            Box::new(|p| p.retry.backoff_ms_min = 0),
        ),
        (
            "retry.backoff_ms_min",
            Box::new(|p| p.retry.backoff_ms_min = p.retry.backoff_ms_max + 1),
        ),
        (
            "drive_request_timeout_ms",
            Box::new(|p| p.drive_request_timeout_ms = 0),
        ),
    ];
    for (field, break_it) in cases {
        let mut p = Profile::prod();
        break_it(&mut p);
        assert_eq!(invalid_field(&p), Some(field), "{p:?}");
        let message = p
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains(field), "{message}");
    }
    // Limits off: a zero daily limit is harmless.
    let mut dev = Profile::dev();
    dev.daily_limit_bytes = 0;
    assert_eq!(dev.validate(), Ok(()));
}

#[test]
fn bad_toml_is_refused_with_the_field_named() {
    let unknown = Profile::from_toml("name = \"x\"\nglobal_slotz = 3\n", "t.toml");
    assert!(
        matches!(&unknown, Err(ProfileError::Parse { message, .. }) if message.contains("global_slotz")),
        "{unknown:?}"
    );
    let wrong_type = Profile::prod()
        .to_toml()
        .replace("global_slots = 20", "global_slots = \"many\"");
    assert!(matches!(
        Profile::from_toml(&wrong_type, "t.toml"),
        Err(ProfileError::Parse { .. })
    ));
    let negative = Profile::prod()
        .to_toml()
        .replace("user_slots = 5", "user_slots = -5");
    assert!(matches!(
        Profile::from_toml(&negative, "t.toml"),
        Err(ProfileError::Parse { .. })
    ));
    let zero = Profile::prod()
        .to_toml()
        .replace("user_slots = 5", "user_slots = 0");
    assert!(matches!(
        Profile::from_toml(&zero, "t.toml"),
        Err(ProfileError::Invalid {
            field: "user_slots",
            ..
        })
    ));
    assert!(matches!(
        Profile::load("no/such/file.toml"),
        Err(ProfileError::Unknown { .. })
    ));
}

#[test]
fn drift_lists_exactly_the_changed_fields() {
    let d = drift(&Profile::dev(), &Profile::prod());
    let fields: Vec<&str> = d.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "memory_limit_percent",
            "reserved_memory_bytes",
            "upload_limits_enabled"
        ]
    );
    assert!(drift(&Profile::prod(), &Profile::prod()).is_empty());
    let one = with_field(
        &Profile::dev(),
        "memory_limit_percent",
        &serde_json::json!(80),
    )
    .map(|p| p.memory_limit_percent);
    assert_eq!(one, Ok(80));
    assert!(with_field(
        &Profile::dev(),
        "memory_limit_percent",
        &serde_json::json!(0)
    )
    .is_err());
}

#[test]
fn memory_policy_never_overflows() {
    let p = MemoryPolicy::PercentOfFile { percent: 100 };
    assert_eq!(p.required_bytes(u64::MAX, 8 * MIB), u64::MAX);
    assert_eq!(p.required_bytes(0, 8 * MIB), 0);
    assert_eq!(
        MemoryPolicy::ChunkWindow { chunks: u32::MAX }.required_bytes(10, u64::MAX),
        10
    );
    let tenth = MemoryPolicy::PercentOfFile { percent: 10 };
    // At least one chunk, or the whole file if smaller.
    assert_eq!(tenth.required_bytes(5, 8), 5);
    assert_eq!(tenth.required_bytes(50, 8), 8);
    assert_eq!(tenth.required_bytes(100, 8), 10);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let r = RetryPolicy::default();
    assert_eq!(r.backoff_ceiling(0), Duration::from_millis(100));
    assert_eq!(r.backoff_ceiling(3), Duration::from_millis(800));
    assert_eq!(r.backoff_ceiling(200), Duration::from_millis(32_000));
}
