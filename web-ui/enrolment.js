// The unenrolled box's page: shows the public enrolment data; nothing here is secret.
"use strict";
async function loadEnrolment() {
  try {
    const response = await fetch("/api/v1/enrolment", { cache: "no-store" });
    if (!response.ok) return;
    const data = await response.json();
    document.getElementById("wg-public-key").textContent = data.wireguard_public_key || "-";
    document.getElementById("csr-sha256").textContent = data.csr_sha256 || window.renkeiI18n.t("none");
  } catch (e) {
    // Offline or restarting: keep what is shown.
  }
}
document.addEventListener("DOMContentLoaded", loadEnrolment);
