//! Real mode with two `upsim serve` replicas sharing admission through the
//! real Redis on 127.0.0.1:6379 (`--slots`), one `upsim drive`: the
//! README's black-box check. Seven `POST /uploads` for one user, spread
//! over both replicas, give exactly five `201`s (the per-user limit held
//! across replicas) and two `503 slots_busy`; deleting one upload on one
//! replica frees a slot that the other replica then grants.
//!
//! The replicas use a random key prefix, deleted at the end.

use crate::support::{
    create_body, free_port, get, send, upload_id, user, Proc, TempDir, TestResult,
};
use std::time::Duration;
use upsim::profile::Profile;

const REDIS_URL: &str = "redis://127.0.0.1:6379/";

async fn healthy(addr: &str) -> bool {
    get(addr, "/healthz", &[])
        .await
        .is_ok_and(|r| r.status == 200 && r.text().contains("\"reachable\":true"))
}

fn delete_keys(prefix: &str) -> TestResult {
    let mut c = redis::Client::open(REDIS_URL)?.get_connection()?;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query(&mut c)?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(&keys).query::<()>(&mut c)?;
    }
    Ok(())
}

fn serve(
    root: &std::path::Path,
    name: &str,
    addr: &str,
    drive_url: &str,
    prefix: &str,
) -> TestResult<Proc> {
    let profile = root.join("short-wait.toml").to_string_lossy().into_owned();
    Proc::spawn(
        name,
        &[
            "serve",
            "--listen",
            addr,
            "--profile",
            &profile,
            "--drive",
            drive_url,
            "--slots",
            REDIS_URL,
            "--replica-id",
            name,
            "--lease-ttl-ms",
            "3000",
            "--slots-prefix",
            prefix,
        ],
        root,
        "info",
    )
}

async fn create(addr: &str) -> TestResult<(u16, Option<String>, String)> {
    let reply = send(
        addr,
        "POST",
        "/uploads",
        &[user("alice")],
        &create_body(64 << 20),
    )
    .await?;
    let id = (reply.status == 201)
        .then(|| upload_id(&reply))
        .transpose()?;
    Ok((reply.status, id, reply.cause().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_admit_five_of_seven_creates_for_one_user_and_share_a_freed_slot() -> TestResult
{
    let tmp = TempDir::new("replicas")?;
    let root = tmp.path();
    let id = upsim::ids::os_random_id()?;
    let prefix = format!("upsim-test:{}:", &id[..16]);
    let profile = Profile {
        name: "short-wait".into(),
        slot_wait_timeout_ms: 500,
        ..Profile::dev()
    };
    std::fs::write(root.join("short-wait.toml"), profile.to_toml())?;
    let drive_addr = format!("127.0.0.1:{}", free_port()?);
    let s = root.join("drive").to_string_lossy().into_owned();
    let _drive = Proc::spawn(
        "drive",
        &["drive", "--listen", &drive_addr, "--dir", &s],
        root,
        "warn",
    )?;
    let drive_url = format!("http://{drive_addr}");
    let (a_addr, b_addr) = (
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
    );
    let a = serve(root, "replica-a", &a_addr, &drive_url, &prefix)?;
    let b = serve(root, "replica-b", &b_addr, &drive_url, &prefix)?;
    let up = crate::support::wait_until(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { healthy(&a_addr).await && healthy(&b_addr).await },
    )
    .await;
    assert!(up, "servers did not start\n{}\n{}", a.logs(), b.logs());

    let result = async {
        let mut created = Vec::new();
        let mut refused = Vec::new();
        for i in 0..7 {
            let addr = if i % 2 == 0 { &a_addr } else { &b_addr };
            match create(addr).await? {
                (201, Some(id), _) => created.push((addr.clone(), id)),
                (status, _, cause) => refused.push((status, cause)),
            }
        }
        eprintln!(
            "created {}: {created:?}; refused: {refused:?}",
            created.len()
        );
        assert_eq!(
            created.len(),
            5,
            "exactly the 5 per-user slots, across both replicas"
        );
        assert!(
            created.iter().any(|(at, _)| at == &a_addr)
                && created.iter().any(|(at, _)| at == &b_addr)
        );
        assert_eq!(refused, vec![(503, "slots_busy".to_owned()); 2]);
        // Deleting one on a frees a slot that b grants.
        let (at, id) = created
            .iter()
            .find(|(at, _)| at == &a_addr)
            .ok_or("one on a")?;
        let deleted = send(
            at,
            "DELETE",
            &format!("/uploads/{id}"),
            &[user("alice")],
            b"",
        )
        .await?;
        assert_eq!(deleted.status, 200, "{}", deleted.text());
        let (status, _, cause) = create(&b_addr).await?;
        assert_eq!(
            (status, cause.as_str()),
            (201, ""),
            "b grants the freed slot"
        );
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    let cleaned = delete_keys(&prefix);
    if result.is_err() {
        eprintln!("replica a:\n{}\nreplica b:\n{}", a.logs(), b.logs());
    }
    result?;
    cleaned
}
