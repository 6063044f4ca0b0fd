// Japanese (default) and English texts of the status page. Elements name their text with
// data-i18n; the choice is kept in localStorage. Everything is set with textContent.
"use strict";
(function () {
  const TEXTS = {
    ja: {
      login_title: "ステータスページ ログイン",
      login_hint: "この装置の管理者パスワードを入力してください。",
      password: "パスワード",
      login: "ログイン",
      logout: "ログアウト",
      login_wrong: "パスワードが違います。",
      login_wait: "このアドレスからのログイン失敗が続いています。しばらく待ってから再度お試しください。",
      login_missing: "パスワードを入力してください。",
      enrolment_title: "登録情報",
      enrolment_hint: "この装置にはまだ設定がありません。以下の値を運用者に伝えてください(フィンガープリントは電話で読み上げて照合します)。",
      wg_public_key: "WireGuard 公開鍵",
      csr_sha256: "CSR フィンガープリント (SHA-256)",
      csr_file: "CSR ファイル",
      csr_download: "box.csr をダウンロード",
      enrolment_cert_hint: "このページの証明書は装置が自分で作成したものなので、ブラウザーが警告を表示します。証明書の SHA-256 フィンガープリントが装置のコンソールの値 (「Page cert SHA-256」) と一致することを確認してください。",
      none: "なし",
      role: "役割",
      role_hub: "データセンター (ハブ)",
      role_disclosing: "開示施設",
      role_viewing: "閲覧施設",
      tunnel: "トンネル",
      state: "状態",
      state_up: "接続中",
      state_idle: "待機",
      state_connecting: "接続処理中",
      state_down: "切断",
      reason: "理由",
      policy: "方式",
      policy_always_on: "常時接続",
      policy_on_demand: "オンデマンド",
      last_handshake: "最終ハンドシェイク",
      never: "なし",
      seconds_ago: "秒前",
      endpoint: "接続先",
      received: "受信",
      sent: "送信",
      connect_now: "今すぐ接続",
      disconnect: "切断する",
      alarm: "警報: 最終ハンドシェイクから時間が経ちすぎています",
      services: "サービス",
      service: "サービス",
      direction: "方向",
      active: "接続中",
      total: "累計",
      refused: "拒否",
      last_error: "最後のエラー",
      certificates: "証明書",
      subject: "サブジェクト",
      days_left: "残り日数",
      expires: "有効期限",
      renew_soon: "まもなく期限切れ",
      config: "設定",
      version: "バージョン",
      description: "説明",
      signer: "配信者",
      local_file: "ローカルファイル",
      applied_at: "適用日時",
      pending: "確認待ちの設定",
      pending_countdown: "確認されなければ自動で戻るまで",
      seconds: "秒",
      enrolment: "登録情報",
      status_page: "ステータスページ",
      certificate_sha256: "証明書フィンガープリント (SHA-256)",
      clock: "時刻同期",
      clock_ok: "同期済み",
      clock_bad: "未同期 (証明書の検証に影響します)",
      clock_unknown: "不明",
      events: "最近のイベント",
      time: "時刻",
      level: "レベル",
      kind: "種類",
      message: "内容",
      access_log: "アクセスログ",
      peer: "接続元",
      identity: "相手の証明書",
      bytes_in: "受信バイト",
      bytes_out: "送信バイト",
      result: "結果",
      updated: "更新",
      uptime: "稼働時間",
      no_services: "サービスはありません",
      action_failed: "操作に失敗しました",
    },
    en: {
      login_title: "Status page login",
      login_hint: "Administrator password of this box.",
      password: "Password",
      login: "Log in",
      logout: "Log out",
      login_wrong: "Wrong password.",
      login_wait: "Too many failed logins from this address: wait a little and try again.",
      login_missing: "Enter the password.",
      enrolment_title: "Enrolment",
      enrolment_hint: "This box has no configuration yet. Give the operator these values (read the fingerprint out over the phone).",
      wg_public_key: "WireGuard public key",
      csr_sha256: "CSR fingerprint (SHA-256)",
      csr_file: "CSR file",
      csr_download: "Download box.csr",
      enrolment_cert_hint: "The browser warned about this page's certificate because the box made it itself. Its SHA-256 fingerprint must be the one on the box's console (\"Page cert SHA-256\").",
      none: "none",
      role: "Role",
      role_hub: "data centre (hub)",
      role_disclosing: "disclosing facility",
      role_viewing: "viewing facility",
      tunnel: "Tunnel",
      state: "State",
      state_up: "up",
      state_idle: "idle",
      state_connecting: "connecting",
      state_down: "down",
      reason: "Reason",
      policy: "Policy",
      policy_always_on: "always on",
      policy_on_demand: "on demand",
      last_handshake: "Last handshake",
      never: "never",
      seconds_ago: "s ago",
      endpoint: "Endpoint",
      received: "Received",
      sent: "Sent",
      connect_now: "Connect now",
      disconnect: "Disconnect",
      alarm: "ALARM: the last handshake is too old",
      services: "Services",
      service: "Service",
      direction: "Direction",
      active: "Active",
      total: "Total",
      refused: "Refused",
      last_error: "Last error",
      certificates: "Certificates",
      subject: "Subject",
      days_left: "Days left",
      expires: "Expires",
      renew_soon: "renew soon",
      config: "Configuration",
      version: "Version",
      description: "Description",
      signer: "Pushed by",
      local_file: "local file",
      applied_at: "Applied",
      pending: "Config awaiting confirmation",
      pending_countdown: "Rolled back unless confirmed in",
      seconds: "s",
      enrolment: "Enrolment",
      status_page: "Status page",
      certificate_sha256: "Certificate fingerprint (SHA-256)",
      clock: "Clock",
      clock_ok: "synchronized",
      clock_bad: "not synchronized (affects certificate checks)",
      clock_unknown: "unknown",
      events: "Recent events",
      time: "Time",
      level: "Level",
      kind: "Kind",
      message: "Message",
      access_log: "Access log",
      peer: "Peer",
      identity: "Peer certificate",
      bytes_in: "Bytes in",
      bytes_out: "Bytes out",
      result: "Result",
      updated: "Updated",
      uptime: "Uptime",
      no_services: "no services",
      action_failed: "the action failed",
    },
  };
  const KEY = "renkei-lang";
  let current = null;
  function lang() {
    if (current) return current;
    try {
      const chosen = window.localStorage.getItem(KEY);
      if (chosen === "en" || chosen === "ja") return chosen;
    } catch (e) {
      // Storage disabled: the default applies.
    }
    return "ja";
  }
  function t(key) {
    const texts = TEXTS[lang()];
    return Object.prototype.hasOwnProperty.call(texts, key) ? texts[key] : key;
  }
  function apply() {
    document.documentElement.lang = lang();
    document.querySelectorAll("[data-i18n]").forEach(function (el) {
      el.textContent = t(el.getAttribute("data-i18n"));
    });
    document.querySelectorAll("[data-lang]").forEach(function (el) {
      el.classList.toggle("chosen", el.getAttribute("data-lang") === lang());
    });
    document.dispatchEvent(new Event("renkei-lang"));
  }
  function choose(code) {
    current = code;
    try {
      window.localStorage.setItem(KEY, code);
    } catch (e) {
      // Not kept across reloads; still applied now.
    }
    apply();
  }
  window.renkeiI18n = { t: t, apply: apply, lang: lang };
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-lang]").forEach(function (el) {
      el.addEventListener("click", function () { choose(el.getAttribute("data-lang")); });
    });
    apply();
  });
})();
