//! `webhookd demo`: the whole delivery path in one command (see [`run`]).
//! It needs the development kit (a throwaway PostgreSQL server, a verifying
//! receiver), which the default cargo feature `demo` brings in; a build
//! without it says so instead of running.

#[cfg(feature = "demo")]
mod run;

#[cfg(feature = "demo")]
pub use run::run;

/// Without the `demo` feature: a user error saying how to get the demo.
#[cfg(not(feature = "demo"))]
pub async fn run(_database_url: Option<String>, _secret_key: Option<&str>) -> crate::Result<()> {
    Err(crate::Error::input(
        "this webhookd was built without the demo (cargo feature `demo`, on by default); \
         install a default build to run `webhookd demo`"
            .to_string(),
    ))
}
