#!/usr/bin/env node
// nodemailer driver for `mailtls certify --command`: one message, configured the way its README shows.
//
//   node send.js [--ignore-tls] HOST PORT SERVER_NAME CA_FILE PROTOCOL MODE USER PASSWORD ADDRESS
//
// Exit 0 when the server accepted the message; otherwise nodemailer's own error text on stderr, exit 1.
// MAILTLS_DEBUG=1 turns on nodemailer's protocol log (logger + debug) on stderr.
"use strict";

const fs = require("fs");
const nodemailer = require("nodemailer");

function main(argv) {
  const ignoreTLS = argv[0] === "--ignore-tls";
  const args = ignoreTLS ? argv.slice(1) : argv;
  if (args.length !== 9) {
    process.stderr.write(
      "usage: send.js [--ignore-tls] HOST PORT SERVER_NAME CA_FILE PROTOCOL MODE USER PASSWORD ADDRESS\n",
    );
    return Promise.resolve(2);
  }
  const [host, port, serverName, caFile, protocol, mode, user, pass, address] = args;
  if (protocol !== "smtp") {
    process.stderr.write(`nodemailer sends mail: protocol ${protocol} is not supported\n`);
    return Promise.resolve(2);
  }
  const debug = Boolean(process.env.MAILTLS_DEBUG);
  const transporter = nodemailer.createTransport({
    host,
    port: Number(port),
    // nodemailer's own rule: secure=true for implicit TLS (465); otherwise it upgrades with STARTTLS when the
    // server offers it and goes on in clear when it does not (unless requireTLS), or never (ignoreTLS).
    secure: mode === "implicit",
    ignoreTLS,
    auth: { user, pass },
    name: "mailtls.client",
    tls: { ca: [fs.readFileSync(caFile)], servername: serverName },
    connectionTimeout: 20000,
    greetingTimeout: 20000,
    socketTimeout: 20000,
    logger: debug,
    debug,
  });
  const token = Math.random().toString(16).slice(2);
  return transporter
    .sendMail({
      from: address,
      to: address,
      subject: `pytest-mailtls nodemailer ${token}`,
      messageId: `<${token}.nodemailer@mailtls.test>`,
      text: "sent by the nodemailer driver of pytest-mailtls\n",
    })
    .then((info) => {
      process.stdout.write(`accepted: ${info.response}\n`);
      return 0;
    })
    .catch((err) => {
      process.stderr.write(`${err.code ? err.code + ": " : ""}${err.message}\n`);
      return 1;
    });
}

main(process.argv.slice(2)).then((code) => process.exit(code));
