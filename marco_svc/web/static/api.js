// Calls to the service's REST API from the page: the session cookie identifies the caller,
// and every change carries the page's CSRF token.
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export async function putHumanScore(imageId, label, scheme) {
  const answer = await fetch(`/api/v1/images/${imageId}/human-score`, {
    method: "PUT",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify({ label, scheme }),
    credentials: "same-origin",
  });
  const body = await answer.json();
  if (!answer.ok) throw new Error(body.detail || body.title || answer.statusText);
  return body;
}
