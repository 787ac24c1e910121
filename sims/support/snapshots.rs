//! What a simulated run's check needs around it: insta settings for the
//! snapshots in `snapshots/`, and the one command that replays a seed.

/// insta settings: snapshots live in the top-level `snapshots/` directory,
/// named by the test alone, never beside the test files.
pub fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings
}

/// On failure, the seed and the one command that replays it.
pub fn replay_hint(scenario: &str, seed: u64) -> String {
    format!("seed {seed}; replay with: cargo run --release -- run {scenario} --seed {seed}")
}
