// The dashboard's only script: the API token, write actions, the prediction form, live job cards.
"use strict";
const TOKEN_KEY = "minigrad-token";
const tokenRequired = document.body.dataset.tokenRequired === "1";
let unlocked = !tokenRequired;

const authHeaders = () => {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? {Authorization: "Bearer " + token} : {};
};
const problemText = async (response) => {
  const body = await response.json().catch(() => ({}));
  return `${response.status} ${body.title || response.statusText}: ${body.detail || ""}`;
};

// Elements marked .needs-token appear only once the token is accepted; .token-prompt the other way round.
function showAccess(root) {
  root.querySelectorAll(".needs-token").forEach((el) => { el.hidden = !unlocked; });
  root.querySelectorAll(".token-prompt").forEach((el) => { el.hidden = unlocked; });
}

async function checkToken() {
  if (tokenRequired && sessionStorage.getItem(TOKEN_KEY)) {
    const response = await fetch("/ui/token", {headers: authHeaders()});
    unlocked = response.status === 204;
    if (!unlocked) sessionStorage.removeItem(TOKEN_KEY);
  }
  showAccess(document);
  return unlocked;
}

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (form.id === "token-form") {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, form.elements.token.value);
    form.querySelector(".token-message").textContent = (await checkToken()) ? "" : "token not accepted";
  } else if (form.id === "predict-form") {
    event.preventDefault();
    const result = document.getElementById("predict-result");
    let inputs;
    try { inputs = JSON.parse(form.elements.inputs.value); } catch (error) {
      result.textContent = "inputs: not valid JSON (" + error.message + ")";
      return;
    }
    const body = {model: form.dataset.model, version: Number(form.dataset.version), inputs};
    const response = await fetch(form.dataset.url, {method: "POST", body: JSON.stringify(body),
      headers: {"Content-Type": "application/json", ...authHeaders()}});
    result.textContent = response.ok ? JSON.stringify((await response.json()).outputs) : await problemText(response);
    result.className = response.ok ? "ok" : "error";
  }
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-method]");
  if (button && window.confirm(button.dataset.confirm)) {
    const response = await fetch(button.dataset.url, {method: button.dataset.method, headers: authHeaders()});
    if (!response.ok) window.alert(await problemText(response));
    else if (button.dataset.then) window.location.assign(button.dataset.then);
    else window.location.reload();
  } else if (event.target.id === "token-forget") {
    sessionStorage.removeItem(TOKEN_KEY);
    unlocked = false;
    showAccess(document);
  }
});

// A queued or running job's card replaces itself with a fresh copy from the server every second
// (while the tab is visible: a forgotten background tab costs the server nothing).
function follow(card) {
  setTimeout(async () => {
    if (document.hidden) return follow(card);
    let response;
    try {
      response = await fetch(card.dataset.cardUrl);
    } catch {
      return follow(card); // the server restarting: try again, as after a 5xx
    }
    if (response.status >= 500) return follow(card); // the job queue down for a moment (503)
    if (!response.ok) return; // the job is gone (404): nothing more to follow
    const template = document.createElement("template");
    template.innerHTML = (await response.text()).trim();
    const fresh = template.content.firstElementChild;
    showAccess(template.content);
    card.replaceWith(fresh);
    if (fresh.dataset.active === "1") follow(fresh);
  }, 1000);
}

checkToken();
document.querySelectorAll(".job[data-active='1']").forEach(follow);
