//! The drive's token endpoint and the client's access tokens, over loopback:
//! the refresh-token grant, bearer tokens that expire, and a client that
//! refreshes before expiry and once on a `401`.

use super::*;
use std::time::Duration;
use upsim::drive::{AccessTokens, OAuthClient, OAuthClients, OAuthCredentials};
use upsim::user::UserId;

const SECRET: &str = "s3cret-never-logged";
const REFRESH: &str = "1//refresh-never-logged";

async fn oauth_drive(clock: Arc<ManualClock>) -> TestResult<Drive> {
    let clients = OAuthClients {
        clients: vec![OAuthClient {
            client_id: "cid".into(),
            client_secret: SECRET.into(),
            refresh_token: REFRESH.into(),
            user: UserId::new("alice")?,
        }],
        access_token_lifetime: Duration::from_secs(100),
    };
    let config = DriveConfig {
        oauth_clients: Some(clients),
        ..DriveConfig::default()
    };
    start_drive(config, clock, Arc::new(DigestStore)).await
}

fn grant(secret: &str) -> String {
    format!("grant_type=refresh_token&client_id=cid&client_secret={secret}&refresh_token=1%2F%2Frefresh-never-logged")
}

async fn post_token(drive: &Drive, body: &str) -> TestResult<RawReply> {
    let form = ("content-type", "application/x-www-form-urlencoded");
    let len = body.len().to_string();
    raw(
        &drive.addr,
        "POST",
        "/token",
        &[form, ("content-length", &len)],
        body.as_bytes(),
    )
    .await
}

fn json(reply: &RawReply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).unwrap_or_default()
}

#[tokio::test]
async fn the_token_endpoint_grants_refresh_tokens_and_refuses_everything_else() -> TestResult {
    let drive = oauth_drive(Arc::new(ManualClock::default())).await?;
    let granted = post_token(&drive, &grant(SECRET)).await?;
    assert_eq!(granted.status, 200, "{granted:?}");
    let body = json(&granted);
    assert_eq!(body["expires_in"], 100);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() > 16));
    for (request, status, error) in [
        (grant("wrong"), 400, "invalid_grant"),
        (
            "grant_type=password&username=a".to_owned(),
            400,
            "unsupported_grant_type",
        ),
    ] {
        let reply = post_token(&drive, &request).await?;
        assert_eq!(
            (reply.status, json(&reply)["error"].as_str()),
            (status, Some(error)),
            "{request}"
        );
    }
    let huge = "x".repeat(9 * 1024);
    assert_eq!(post_token(&drive, &huge).await?.status, 413);
    let get = raw(&drive.addr, "GET", "/token", &[], b"").await?;
    assert_eq!(get.status, 405);
    assert_eq!(drive.control.stats().access_tokens_issued, 1);
    Ok(())
}

#[tokio::test]
async fn an_issued_token_opens_uploads_until_it_expires() -> TestResult {
    let clock = Arc::new(ManualClock::default());
    let drive = oauth_drive(clock.clone()).await?;
    let token = json(&post_token(&drive, &grant(SECRET)).await?)["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let anonymous = drive.client();
    let refused = anonymous.initiate("f", "a/b", 10).await;
    assert!(
        matches!(&refused, Err(DriveError::Refused { status: 401, .. })),
        "{refused:?}"
    );
    let holder = DriveClient::new(Arc::new(TokioNetwork), &drive.base_url, Some(token));
    holder.initiate("f", "a/b", 10).await?;
    clock.advance(Duration::from_secs(101));
    let expired = holder.initiate("f", "a/b", 10).await;
    match &expired {
        Err(DriveError::Refused {
            status: 401,
            message,
            ..
        }) => {
            assert!(message.contains("expired"), "{message}")
        }
        other => return Err(format!("{other:?}").into()),
    }
    // A fresh token, revoked by the fault: refused before it expires.
    let fresh = json(&post_token(&drive, &grant(SECRET)).await?)["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let holder = DriveClient::new(Arc::new(TokioNetwork), &drive.base_url, Some(fresh));
    holder.initiate("f", "a/b", 10).await?;
    drive.control.expire_access_tokens();
    match holder.initiate("f", "a/b", 10).await {
        Err(DriveError::Refused {
            status: 401,
            message,
            ..
        }) => {
            assert!(message.contains("revoked"), "{message}")
        }
        other => return Err(format!("{other:?}").into()),
    }
    Ok(())
}

#[tokio::test]
async fn a_client_with_a_refresh_token_refreshes_when_due_and_once_on_a_401() -> TestResult {
    let clock = Arc::new(ManualClock::default());
    let drive = oauth_drive(clock.clone()).await?;
    let credentials = OAuthCredentials {
        client_id: "cid".into(),
        client_secret: SECRET.into(),
        refresh_token: REFRESH.into(),
        token_uri: format!("{}/token", drive.base_url),
    };
    let tokens = Arc::new(AccessTokens::new(
        Arc::new(TokioNetwork),
        clock.clone(),
        credentials,
        None,
    )?);
    assert!(!format!("{tokens:?}").contains(SECRET));
    let client =
        DriveClient::with_access_tokens(Arc::new(TokioNetwork), &drive.base_url, tokens.clone());
    let other =
        DriveClient::with_access_tokens(Arc::new(TokioNetwork), &drive.base_url, tokens.clone());
    client.initiate("f", "a/b", 10).await?;
    other.initiate("g", "a/b", 10).await?;
    assert_eq!(tokens.refreshes(), 1, "one token shared by both clients");
    // Refreshed before expiry: at 75 s of a 100 s life (the margin is a
    // quarter of a short life), never sent expired.
    clock.advance(Duration::from_secs(76));
    client.initiate("f", "a/b", 10).await?;
    assert_eq!(tokens.refreshes(), 2);
    // Revoked behind the client's back: the 401 is answered by one refresh
    // and the request goes through.
    drive.control.expire_access_tokens();
    client.initiate("f", "a/b", 10).await?;
    assert_eq!(tokens.refreshes(), 3);
    assert_eq!(drive.control.stats().access_tokens_issued, 3);
    Ok(())
}

#[tokio::test]
async fn a_revoked_refresh_token_is_a_typed_refusal_not_a_retry() -> TestResult {
    let drive = oauth_drive(Arc::new(ManualClock::default())).await?;
    let credentials = OAuthCredentials {
        client_id: "cid".into(),
        client_secret: "not-the-secret".into(),
        refresh_token: REFRESH.into(),
        token_uri: format!("{}/token", drive.base_url),
    };
    let tokens = AccessTokens::new(
        Arc::new(TokioNetwork),
        Arc::new(ManualClock::default()),
        credentials,
        None,
    )?;
    let client =
        DriveClient::with_access_tokens(Arc::new(TokioNetwork), &drive.base_url, Arc::new(tokens));
    let refused = client.initiate("f", "a/b", 10).await;
    match &refused {
        Err(
            e @ DriveError::Refused {
                status: 400,
                message,
                ..
            },
        ) => {
            assert!(!e.is_retryable());
            assert!(message.contains("invalid_grant"), "{message}");
        }
        other => return Err(format!("{other:?}").into()),
    }
    Ok(())
}
