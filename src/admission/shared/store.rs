//! [`SlotStore`]: this replica's handle on the shared slot store (Redis).
//!
//! Every method is one script, so one round trip and one atomic decision
//! (see `scripts.rs`). Every reply carries the store's generation; the
//! last one seen is sent with every script, so the store learns at this
//! replica's first call that it has lost its data (common.lua, `notice`). The connection is made on first use and made again
//! after it broke; a call that meets a broken or missing connection fails
//! with [`StoreError::Unreachable`] (the caller refuses; nothing is retried
//! here, so nothing is granted on a guess).

use super::config::{SharedConfig, STORE_IO_TIMEOUT};
use super::error::StoreError;
use super::scripts::{
    decode_cancel, decode_release, decode_renew, split_generation, AcquireReply, RenewReply,
    Scripts, StoreState,
};
use super::wake::{channel, Wake};
use crate::env::UtcDay;
use crate::user::UserId;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, Script};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One request for a global and a user slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// Who asks.
    pub user: UserId,
    /// `None`: a new request; `Some`: polling an earlier one's ticket.
    pub ticket: Option<u64>,
    /// Global limit.
    pub global_slots: u32,
    /// Per-user limit.
    pub user_slots: u32,
    /// Bytes to charge against the user's daily quota.
    pub quota_bytes: u64,
    /// The daily quota; `None`: charged but never refused.
    pub daily_limit_bytes: Option<u64>,
    /// Longest queue.
    pub waiters_max: u32,
    /// Whether the charge is refunded if the lease expires unreleased (the
    /// profile's `refund_quota_on_failure`: its upload ended without a
    /// release, a failure).
    pub refund_on_expiry: bool,
}

/// A lease as its holder knows it: what the renew script needs to extend
/// it, or to put it back after the store lost it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The fencing token.
    pub token: u64,
    /// Whose upload.
    pub user: UserId,
    /// The UTC day (store clock) its quota was charged to.
    pub day: UtcDay,
    /// The bytes charged.
    pub quota_bytes: u64,
    /// Whether the charge is refunded if the lease expires unreleased.
    pub refund_on_expiry: bool,
    /// The store's generation the lease belongs to (granted or re-asserted in).
    pub generation: u64,
}

/// This replica's handle on the store.
pub struct SlotStore {
    config: SharedConfig,
    client: redis::Client,
    /// `host:port` for messages (never the URL's password).
    address: String,
    /// The connection, once made; `None` after it broke.
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    scripts: Scripts,
    /// The store's generation in the last reply (0: none yet).
    generation: AtomicU64,
    /// Wakes this replica's waiters when a lease is released anywhere.
    wake: Wake,
}

impl SlotStore {
    /// A handle on the store at `config.url`. Connects on first use, so a
    /// store that is down at boot refuses admissions instead of stopping
    /// the replica.
    pub fn open(config: SharedConfig) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| StoreError::Unreachable {
                address: config.url.clone(),
                reason: format!("bad store URL: {e}"),
            })?;
        let address = client.get_connection_info().addr().to_string();
        Ok(Self {
            config,
            client,
            address,
            conn: tokio::sync::Mutex::new(None),
            scripts: Scripts::new(),
            generation: AtomicU64::new(0),
            wake: Wake::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SharedConfig {
        &self.config
    }

    /// `host:port` of the store.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Starts listening for releases (once per store; must run inside a
    /// tokio runtime).
    pub(super) fn listen_for_releases(&self) {
        self.wake
            .listen(&self.client, channel(&self.config.key_prefix));
    }

    /// Completes at the next release message (see `wake.rs`).
    pub(super) fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    fn unreachable(&self, e: &RedisError) -> StoreError {
        StoreError::Unreachable {
            address: self.address.clone(),
            reason: e.to_string(),
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let io = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(STORE_IO_TIMEOUT))
            .set_response_timeout(Some(STORE_IO_TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&io)
            .await
            .map_err(|e| self.unreachable(&e))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// The store's generation in the last reply (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Runs `script` with the prefix and `args`; its reply as integers and
    /// the generation that ended it (recorded as the last seen).
    async fn run(
        &self,
        name: &'static str,
        script: &Script,
        args: &[String],
    ) -> Result<(Vec<i64>, u64), StoreError> {
        let reply = self.invoke(name, script, args).await?;
        let (reply, generation) = split_generation(name, reply)?;
        self.generation.store(generation, Ordering::Release);
        Ok((reply, generation))
    }

    async fn invoke(
        &self,
        name: &'static str,
        script: &Script,
        args: &[String],
    ) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.connection().await?;
        let mut invocation = script.prepare_invoke();
        invocation.arg(&self.config.key_prefix);
        for a in args {
            invocation.arg(a);
        }
        // common.lua's two: the lease TTL and the generation seen last.
        invocation.arg(ms(self.config.lease_ttl));
        invocation.arg(self.generation());
        match invocation.invoke_async::<Vec<i64>>(&mut conn).await {
            Ok(reply) => Ok(reply),
            Err(e) if e.is_io_error() || e.is_unrecoverable_error() || e.is_timeout() => {
                // Made again on the next call.
                *self.conn.lock().await = None;
                Err(self.unreachable(&e))
            }
            Err(e) => Err(StoreError::Script {
                script: name,
                reason: e.to_string(),
            }),
        }
    }

    /// Takes a global and a user slot and charges the quota, all or
    /// nothing; or queues the request (or keeps its ticket alive).
    pub async fn acquire(&self, req: &LeaseRequest) -> Result<AcquireReply, StoreError> {
        let daily_limit = req
            .daily_limit_bytes
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let args = [
            req.user.to_string(),
            self.config.replica_id.clone(),
            req.ticket.unwrap_or(0).to_string(),
            req.global_slots.to_string(),
            req.user_slots.to_string(),
            ms(self.config.lease_ttl).to_string(),
            req.quota_bytes.to_string(),
            daily_limit.to_string(),
            req.waiters_max.to_string(),
            ms(self.config.waiter_ttl()).to_string(),
            u8::from(req.refund_on_expiry).to_string(),
        ];
        let (reply, generation) = self.run("acquire", &self.scripts.acquire, &args).await?;
        AcquireReply::decode(&reply, generation)
    }

    /// Extends this replica's lease by the TTL from now (store clock); or,
    /// if the store lost it with all its data and is in quarantine,
    /// re-asserts it as `lease` says it was.
    pub async fn renew(&self, lease: &LeaseRecord) -> Result<RenewReply, StoreError> {
        let args = [
            lease.token.to_string(),
            self.config.replica_id.clone(),
            ms(self.config.lease_ttl).to_string(),
            lease.user.to_string(),
            lease.day.0.to_string(),
            lease.quota_bytes.to_string(),
            u8::from(lease.refund_on_expiry).to_string(),
            lease.generation.to_string(),
        ];
        let (reply, generation) = self.run("renew", &self.scripts.renew, &args).await?;
        decode_renew(&reply, generation)
    }

    /// Deletes lease `token` if this replica holds it for `user` (never
    /// another holder's); refunds its quota charge if asked. The bytes
    /// refunded, or `None` if nothing was deleted.
    pub async fn release(
        &self,
        token: u64,
        user: &UserId,
        refund: bool,
    ) -> Result<Option<u64>, StoreError> {
        let args = [
            token.to_string(),
            self.config.replica_id.clone(),
            user.to_string(),
            u8::from(refund).to_string(),
        ];
        decode_release(&self.run("release", &self.scripts.release, &args).await?.0)
    }

    /// Takes a waiter's ticket out of the queue; whether it was there.
    pub async fn cancel(&self, ticket: u64) -> Result<bool, StoreError> {
        let (reply, _) = self
            .run("cancel", &self.scripts.cancel, &[ticket.to_string()])
            .await?;
        decode_cancel(&reply)
    }

    /// What the store holds now (after purging expired leases), with
    /// `user`'s figures if one is given.
    pub async fn state(&self, user: Option<&UserId>) -> Result<StoreState, StoreError> {
        let user = user.map(ToString::to_string).unwrap_or_default();
        let (reply, generation) = self.run("state", &self.scripts.state, &[user]).await?;
        StoreState::decode(&reply, generation)
    }

    /// Deletes every key under this store's prefix (tests clean up with
    /// it); how many.
    pub async fn delete_all_keys(&self) -> Result<u64, StoreError> {
        let mut conn = self.connection().await?;
        let pattern = format!("{}*", self.config.key_prefix);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.unreachable(&e))?;
        if keys.is_empty() {
            return Ok(0);
        }
        redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.unreachable(&e))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
