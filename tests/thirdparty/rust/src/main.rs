//! lettre driver for `mailtls certify --command`: one message, configured as lettre's examples show.
//!
//!     mailtls-lettre HOST PORT SERVER_NAME CA_FILE PROTOCOL MODE USER PASSWORD ADDRESS
//!
//! Implicit cells use `Tls::Wrapper` (what `SmtpTransport::relay` does); every other cell `Tls::Required`
//! (what `SmtpTransport::starttls_relay` does): lettre then refuses to go on without STARTTLS. The TLS
//! parameters trust only the session CA and check SERVER_NAME. Exit 0 when the server accepted the
//! message; otherwise lettre's error chain on stderr, exit 1.
use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

fn send(a: &[String]) -> Result<String, Box<dyn Error>> {
    let (host, port, server_name, ca_file, protocol, mode, user, password, address) =
        (&a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6], &a[7], &a[8]);
    if protocol != "smtp" {
        return Err(format!("lettre sends mail: protocol {protocol} is not supported").into());
    }
    let pem = std::fs::read(ca_file)?;
    let parameters = TlsParameters::builder(server_name.clone())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(Certificate::from_pem(&pem)?)
        .build_rustls()?;
    let tls = if mode == "implicit" { Tls::Wrapper(parameters) } else { Tls::Required(parameters) };
    let token = format!("{:016x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
    let email = Message::builder()
        .from(address.parse()?)
        .to(address.parse()?)
        .subject(format!("pytest-mailtls lettre {token}"))
        .message_id(Some(format!("<{token}.lettre@mailtls.test>")))
        .header(ContentType::TEXT_PLAIN)
        .body(String::from("sent by the lettre driver of pytest-mailtls\n"))?;
    let mailer = SmtpTransport::builder_dangerous(host.as_str())
        .port(port.parse()?)
        .tls(tls)
        .hello_name(lettre::transport::smtp::extension::ClientId::Domain("mailtls.client".into()))
        .credentials(Credentials::new(user.clone(), password.clone()))
        .timeout(Some(Duration::from_secs(20)))
        .build();
    let response = mailer.send(&email)?;
    Ok(format!("accepted: {} {}", response.code(), response.message().collect::<Vec<_>>().join(" ")))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 9 {
        eprintln!("usage: mailtls-lettre HOST PORT SERVER_NAME CA_FILE PROTOCOL MODE USER PASSWORD ADDRESS");
        return ExitCode::from(2);
    }
    match send(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            // Print the source chain, skipping a cause whose text the line already carries (lettre's
            // Display repeats its source).
            let mut text = err.to_string();
            let mut source = err.source();
            while let Some(s) = source {
                let cause = s.to_string();
                if !text.contains(&cause) {
                    text.push_str(&format!(": {cause}"));
                }
                source = s.source();
            }
            eprintln!("{text}");
            ExitCode::from(1)
        }
    }
}
