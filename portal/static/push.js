// "Notify me on this phone": subscribe this browser to the venue's offers (portal/push.py).
// Runs only on the tap; the card stays hidden where Web Push cannot work.
(function () {
  "use strict";
  var card = document.getElementById("push");
  if (!card) return;
  if (!window.isSecureContext || !("serviceWorker" in navigator) ||
      !("PushManager" in window) || !("Notification" in window)) return;
  var button = card.querySelector("button");
  var status = card.querySelector("[role=status]");
  var cloud = card.dataset.cloud, venue = card.dataset.venue, token = card.dataset.token;
  card.hidden = false;

  function say(which) { status.textContent = card.dataset[which]; }

  function keyBytes(b64url) {
    var b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    var raw = atob(b64 + "===".slice((b64.length + 3) % 4));
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function sameKey(a, b) {
    if (!a || a.byteLength !== b.byteLength) return false;
    var x = new Uint8Array(a);
    for (var i = 0; i < b.length; i++) if (x[i] !== b[i]) return false;
    return true;
  }

  async function cloudJson(path, init) {
    var answer = await fetch(cloud + path, Object.assign(
      {credentials: "omit", referrerPolicy: "no-referrer", cache: "no-store"}, init || {}));
    if (!answer.ok) throw new Error(path + ": " + answer.status);
    return answer.json();
  }

  async function subscribe() {
    if (await Notification.requestPermission() !== "granted") return "denied";
    var registration = await navigator.serviceWorker.register("/sw.js", {scope: "/"});
    await navigator.serviceWorker.ready;
    var key = keyBytes((await cloudJson("/api/v1/push/vapid-public-key")).public_key);
    var subscription = await registration.pushManager.getSubscription();
    // One made with another key (the cloud's key was replaced) can no longer be pushed to.
    if (subscription && !sameKey(subscription.options.applicationServerKey, key)) {
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) {
      subscription = await registration.pushManager.subscribe(
        {userVisibleOnly: true, applicationServerKey: key});
    }
    await cloudJson("/api/v1/push/subscribe", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(
        {venue_id: venue, subscription: subscription.toJSON(), connect_token: token}),
    });
    return "done";
  }

  button.addEventListener("click", function () {
    button.disabled = true;
    subscribe().then(function (outcome) {
      say(outcome);
      if (outcome === "done") button.hidden = true; else button.disabled = false;
    }, function () {
      say("failed");
      button.disabled = false;
    });
  });
})();
