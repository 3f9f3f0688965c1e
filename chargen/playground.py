"""The playground: one self-contained page that `chargen serve` answers at `/`.

Type a beginning, press Write: the continuation streams in from POST /v1/completions (stream, with
`logprobs`), each character's background coloured by the bits the model spent on it, on the scale
and legend of `chargen inspect` (`SURPRISE_STOPS`), its probability in the tooltip. Continue goes on
from the end of the story; Stop aborts the request (the server then stops drawing); Undo takes back
the last turn; a seed makes a turn repeatable. Sliders set temperature, top-k, top-p and length.

No network resources, no build step: the style and script are inline, the served runs and limits
are embedded as JSON. Model text reaches the page only through `textContent`.
"""
from __future__ import annotations

import json

from chargen.inspect import SURPRISE_STOPS, surprise_legend
from chargen.sample import SamplingSettings

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; background: #fff; margin: 1.2em auto; max-width: 60em;
       padding: 0 1em; }
h1 { font-size: 1.25em; margin: 0 0 .2em; }
#about { color: #555; margin-bottom: .8em; }
#story { font: 14px/1.6 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; white-space: pre-wrap;
         overflow-wrap: anywhere; min-height: 8em; max-height: 55vh; overflow-y: auto; border: 1px solid #bbb;
         border-radius: 4px; padding: .6em .8em; }
#story .typed { font-weight: bold; }
#story span.gen:hover { outline: 1px solid #000; }
textarea { width: 100%; box-sizing: border-box; font: 14px/1.5 ui-monospace, monospace; margin: .6em 0 .3em; }
.row { display: flex; flex-wrap: wrap; gap: .4em 1.4em; align-items: center; margin: .4em 0; }
label { white-space: nowrap; }
input[type=range] { vertical-align: middle; width: 9em; }
input[type=number] { width: 7em; }
button { font-size: 1em; padding: .25em .9em; }
#status { color: #555; min-height: 1.4em; }
#status.error { color: #b00; }
.swatch { font-family: monospace; padding: 0 .5em; margin-right: .25em; white-space: nowrap; }
"""

BODY = """
<h1>chargen playground</h1>
<div class="row"><label>model <select id="model"></select></label><span id="about"></span></div>
<div id="story" aria-live="polite"></div>
<p id="legend"></p>
<textarea id="prompt" rows="3"
  placeholder="Type a beginning, then Write (the story so far is the model's context)"></textarea>
<div class="row">
  <button id="write">Write</button><button id="continue">Continue</button>
  <button id="stop" disabled>Stop</button><button id="undo">Undo</button><button id="clear">Clear</button>
  <span id="status"></span>
</div>
<div class="row">
  <label>temperature <input id="temperature" type="range" min="0" max="2" step="0.05"> <output></output></label>
  <label>top-k <input id="top_k" type="range" min="0" step="1"> <output></output></label>
  <label>top-p <input id="top_p" type="range" min="0.05" max="1" step="0.05"> <output></output></label>
  <label>length <input id="length" type="range" min="1" step="1"> <output></output></label>
  <label>seed <input id="seed" type="number" min="0" step="1" placeholder="random"></label>
</div>
"""

SCRIPT = r"""
const C = JSON.parse(document.getElementById("config").textContent);
const $ = id => document.getElementById(id);
const story = $("story"), status = $("status");
let turns = [];          // each: {typed: string, chars: [[character, probability], ...]}
let controller = null;   // the request being streamed, to abort with Stop

// The inspector's surprise scale: bits -> background, black or white text by luma (inspect.colours).
function rgb(bits) {
  const s = C.stops, v = Math.min(Math.max(bits, s[0][0]), s[s.length - 1][0]);
  let k = 1;
  while (k < s.length - 1 && s[k][0] < v) k++;
  const [x0, c0] = s[k - 1], [x1, c1] = s[k], t = x1 > x0 ? (v - x0) / (x1 - x0) : 0;
  return c0.map((c, i) => Math.round(c + t * (c1[i] - c)));
}
const css = c => "rgb(" + c.join(",") + ")";
const ink = c => 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] >= 140 ? "#000" : "#fff";
// Control and reordering characters are shown escaped, never interpreted.
const shown = ch => /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/.test(ch)
  ? "\\u" + ch.codePointAt(0).toString(16).padStart(4, "0") : ch;

function charSpan(ch, p) {
  const s = document.createElement("span"), bits = -Math.log2(Math.max(p, 1e-300)), c = rgb(bits);
  s.className = "gen";
  s.textContent = shown(ch);
  s.style.background = css(c);
  s.style.color = ink(c);
  s.title = "probability " + (p >= 0.001 ? p.toFixed(4) : p.toExponential(2)) + " (" + bits.toFixed(2) + " bits)";
  return s;
}
function typedSpan(text) {
  const s = document.createElement("span");
  s.className = "typed";
  s.textContent = [...text].map(shown).join("");
  return s;
}
function render() {
  story.replaceChildren();
  for (const t of turns) {
    if (t.typed) story.append(typedSpan(t.typed));
    for (const [ch, p] of t.chars) story.append(charSpan(ch, p));
  }
}
const storyText = () => turns.map(t => t.typed + t.chars.map(c => c[0]).join("")).join("");
function say(text, error) { status.textContent = text; status.className = error ? "error" : ""; }
function busy(on) {
  for (const id of ["write", "continue", "undo", "clear", "model"]) $(id).disabled = on;
  $("stop").disabled = !on;
}

async function turn(typed) {
  const turnData = {typed, chars: []};
  // The context is the whole story (its end when it is longer than the server takes).
  const prompt = (storyText() + typed).slice(-C.limits.max_prompt_chars);
  const body = {model: $("model").value, prompt, stream: true, logprobs: 0,
                max_tokens: +$("length").value, temperature: +$("temperature").value,
                top_k: +$("top_k").value, top_p: +$("top_p").value};
  if ($("seed").value !== "") body.seed = +$("seed").value;
  controller = new AbortController();
  busy(true);
  say("writing…");
  const started = performance.now();
  let added = false, finish = null;
  try {
    const r = await fetch("v1/completions", {method: "POST", headers: {"content-type": "application/json"},
                                             body: JSON.stringify(body), signal: controller.signal});
    if (!r.ok) {
      const e = await r.json().catch(() => ({error: {message: r.statusText}}));
      throw new Error(e.error.message);
    }
    turns.push(turnData);
    added = true;
    if (typed) story.append(typedSpan(typed));
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
        const chunk = JSON.parse(event.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices) {
          const lp = choice.logprobs;
          lp.tokens.forEach((ch, i) => {
            const p = Math.exp(lp.token_logprobs[i]);
            turnData.chars.push([ch, p]);
            story.append(charSpan(ch, p));
          });
          finish = choice.finish_reason || finish;
        }
      }
      story.scrollTop = story.scrollHeight;  // the controls stay put; the story scrolls to its end
      // Let the page handle input (Stop) and draw between reads: a fast stream would otherwise keep
      // the script busy; while it waits, the stream backs up and the server sends larger chunks.
      await new Promise(resolve => setTimeout(resolve, 0));
    }
    const secs = (performance.now() - started) / 1000;
    say(turnData.chars.length + " characters in " + secs.toFixed(1) + " s" +
        (finish === "stop" ? " (a stop string)" : "") + (body.seed !== undefined ? " · seed " + body.seed : ""));
  } catch (e) {
    if (e.name === "AbortError") say("stopped after " + turnData.chars.length + " characters");
    else say(e.message, true);
    if (!added && e.name !== "AbortError") $("prompt").value = typed;
  } finally {
    controller = null;
    busy(false);
  }
  return added;
}

$("write").onclick = async () => {
  const typed = $("prompt").value;
  $("prompt").value = "";
  await turn(typed);
};
$("continue").onclick = () => turn("");
$("stop").onclick = () => controller && controller.abort();
$("undo").onclick = () => {
  const last = turns.pop();
  if (last && last.typed) $("prompt").value = last.typed;
  render();
  say(last ? "took back the last turn" : "nothing to undo");
};
$("clear").onclick = () => { turns = []; render(); say("a fresh story"); };
$("prompt").addEventListener("keydown", e => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("write").click(); }
});

for (const m of C.models) {
  const o = document.createElement("option");
  o.value = o.textContent = m.id;
  $("model").append(o);
}
function describe() {
  const m = C.models.find(m => m.id === $("model").value).chargen;
  $("about").textContent = m.cell.toUpperCase() + " " + m.layers + "x" + m.hidden + " · vocabulary " + m.vocab_size +
    (m.steps ? " · " + m.steps + " steps" : "") + (m.corpus ? " on " + m.corpus : "") +
    (m.val_bpc !== null && m.val_bpc !== undefined ? " · validation " + m.val_bpc.toFixed(3) + " bits/char" : "");
  $("top_k").max = m.vocab_size;
}
$("model").onchange = describe;
describe();
const start = {temperature: C.defaults.temperature, top_k: C.defaults.top_k, top_p: C.defaults.top_p,
               length: Math.min(200, C.limits.max_tokens)};
$("length").max = C.limits.max_tokens;
for (const [id, v] of Object.entries(start)) {
  const input = $(id), out = input.nextElementSibling;
  input.value = v;
  const update = () => out.textContent = id === "top_k" && +input.value === 0 ? "all" : input.value;
  input.oninput = update;
  update();
}
const legend = $("legend");
legend.append(C.legend.title + ": ");
for (const [bits, label] of C.legend.swatches) {
  const s = document.createElement("span"), c = rgb(bits);
  s.className = "swatch";
  s.textContent = label;
  s.style.background = css(c);
  s.style.color = ink(c);
  legend.append(s);
}
"""


def page(runs: dict, limits) -> str:
    """The page for these served runs (`completions.ServedRun` by name) and `Limits`."""
    legend = surprise_legend()
    defaults = SamplingSettings()
    config = {"models": [{"id": name, "chargen": run.describe()} for name, run in runs.items()],
              "limits": {"max_prompt_chars": limits.max_prompt_chars, "max_tokens": limits.max_tokens},
              "defaults": {"temperature": defaults.temperature, "top_k": defaults.top_k, "top_p": defaults.top_p},
              "stops": [[x, list(c)] for x, c in SURPRISE_STOPS],
              "legend": {"title": legend.title, "swatches": legend.swatches}}
    # Inside <script>, "</" could end the element early; "<\/" means the same to JSON.parse.
    payload = json.dumps(config, ensure_ascii=False).replace("</", "<\\/")
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>chargen playground</title>\n<style>{STYLE}</style>\n</head>\n<body>{BODY}"
            f'<script type="application/json" id="config">{payload}</script>\n<script>{SCRIPT}</script>\n'
            "</body>\n</html>\n")
