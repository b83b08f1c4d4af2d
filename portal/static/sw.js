// The portal's service worker: shows the venue's offers pushed by the cloud (portal/push.py).
// Every push shows a notification (the subscription promised `userVisibleOnly`). A tap opens
// the one-tap reconnect link the push carries, and only a link on this portal: a push may
// not send the shopper anywhere else.
"use strict";

function text(value, limit) {
  return typeof value === "string" ? value.slice(0, limit) : "";
}

function ownUrl(value) {
  if (typeof value !== "string") return self.location.origin + "/";
  try {
    var url = new URL(value, self.location.origin);
    if (url.origin === self.location.origin) return url.href;
  } catch (e) { /* not a URL */ }
  return self.location.origin + "/";
}

self.addEventListener("push", function (event) {
  var data = {};
  try { data = event.data ? event.data.json() : {}; } catch (e) { data = {}; }
  if (!data || typeof data !== "object") data = {};
  var offers = Array.isArray(data.offers) ? data.offers : [];
  var lines = [text(data.body, 200)].concat(offers.slice(0, 3).map(function (offer) {
    return offer && typeof offer === "object" ? text(offer.title, 80) : "";
  })).filter(Boolean);
  event.waitUntil(self.registration.showNotification(text(data.title, 120) || "Offers", {
    body: lines.join("\n"),
    tag: "plaza-" + text(data.venue, 40),
    data: {url: ownUrl(data.url)},
  }));
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = ownUrl(event.notification.data && event.notification.data.url);
  event.waitUntil(self.clients.openWindow(url));
});
