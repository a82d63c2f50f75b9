//! A Redis connection that is made again when it breaks: each command runs on the cached
//! multiplexed connection; a connection failure drops it and the command is retried after a
//! backoff (100 ms doubling to 5 s), each retry logged on stderr, until the caller's patience
//! runs out. Redis's own error answers are not retried.

use std::future::Future;
use std::time::{Duration, Instant};

use redis::aio::{MultiplexedConnection, PubSub};
use redis::AsyncConnectionConfig;
use tokio::sync::Mutex;

use crate::Result;

/// The first wait before reconnecting.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One logical connection to Redis, re-made with backoff when it fails.
pub struct Conn {
    client: redis::Client,
    config: AsyncConnectionConfig,
    cached: Mutex<Option<MultiplexedConnection>>,
    /// Who is talking, for log lines ("sumi worker", "sumi serve").
    role: &'static str,
    /// Give up on a command after this long without a connection (`None`: never).
    patience: Option<Duration>,
}

/// Whether `e` means the connection (not the command) failed.
pub fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

impl Conn {
    /// A connection for `role`; `response_timeout` bounds one command (longer than any
    /// blocking read made on it), `patience` how long a command waits for Redis to come back.
    pub fn new(
        client: redis::Client,
        role: &'static str,
        response_timeout: Duration,
        patience: Option<Duration>,
    ) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(response_timeout));
        Self {
            client,
            config,
            cached: Mutex::new(None),
            role,
            patience,
        }
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = &*cached {
            return Ok(c.clone());
        }
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *cached = Some(c.clone());
        Ok(c)
    }

    async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    /// Runs `f` on the connection, reconnecting with backoff while the connection fails.
    pub async fn run<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let start = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut failed = false;
        loop {
            let r = match self.connection().await {
                Ok(c) => f(c).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(v) => {
                    if failed {
                        eprintln!("{}: redis: connected again", self.role);
                    }
                    return Ok(v);
                }
                Err(e) if is_connection_error(&e) => {
                    self.forget().await;
                    if self.patience.is_some_and(|p| start.elapsed() >= p) {
                        return Err(e.into());
                    }
                    eprintln!(
                        "{}: redis: {e}; reconnecting in {:.1} s",
                        self.role,
                        backoff.as_secs_f64()
                    );
                    failed = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A publish/subscribe connection, made with the same backoff.
    pub async fn pubsub(&self) -> PubSub {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.client.get_async_pubsub().await {
                Ok(p) => return p,
                Err(e) => {
                    eprintln!(
                        "{}: redis: {e}; reconnecting in {:.1} s",
                        self.role,
                        backoff.as_secs_f64()
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
