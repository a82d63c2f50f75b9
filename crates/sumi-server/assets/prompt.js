// Prompt text tools: A1111's infotext parser (for "reuse parameters" and PNG info) and its
// Ctrl+Up/Down weight editing (javascript/edit-attention.js of v1.10.1, with its default
// settings: 0.1 steps for (word:w), 0.05 for <extra:network:w>).
"use strict";
window.Sumi = window.Sumi || {};
(() => {
  // A1111 infotext: prompt lines, optionally "Negative prompt: ..." lines, then one line of
  // "Key: value, Key: value" pairs where values may be JSON-quoted strings.
  function parseParamLine(line) {
    const out = {};
    const re = /\s*([\w][\w \-/]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)/g;
    let m, count = 0;
    while ((m = re.exec(line)) !== null) {
      if (m[0] === "") { re.lastIndex++; continue; }
      let v = m[2].trim();
      if (v.startsWith("\"") && v.endsWith("\"") && v.length >= 2) {
        try { v = JSON.parse(v); } catch (_) { /* keep as written */ }
      }
      out[m[1].trim()] = v;
      count++;
      if (re.lastIndex >= line.length) break;
    }
    return { params: out, count };
  }
  function parseInfotext(text) {
    const lines = String(text || "").replace(/\r\n/g, "\n").trim().split("\n");
    let params = {};
    if (lines.length) {
      const last = lines[lines.length - 1];
      const p = parseParamLine(last);
      if (p.count >= 3 && /(^|,\s*)Steps:/.test(last)) {
        params = p.params;
        lines.pop();
      }
    }
    const prompt = [], negative = [];
    let inNeg = false;
    for (const line of lines) {
      if (!inNeg && line.startsWith("Negative prompt:")) {
        inNeg = true;
        negative.push(line.slice("Negative prompt:".length).trim());
      } else if (inNeg) {
        negative.push(line);
      } else {
        prompt.push(line);
      }
    }
    const out = Object.assign({}, params);
    out["Prompt"] = prompt.join("\n");
    out["Negative prompt"] = negative.join("\n");
    if (typeof out["Size"] === "string") {
      const m = /^(\d+)x(\d+)$/.exec(out["Size"].trim());
      if (m) { out["Size-1"] = m[1]; out["Size-2"] = m[2]; }
    }
    return out;
  }

  // A1111's keyedit options, at their defaults.
  const PRECISION_ATTENTION = 0.1, PRECISION_EXTRA = 0.05;
  const DELIMITERS = ".,\\/!?%^*;:{}=`~() " + "\t\r\n";

  // keyupEditAttention: changes the weight of the selection, or of the <…>, (…) or […] block
  // or word around the caret, in `area` (up when `plus`). True when it handled the key.
  function editAttention(area, plus) {
    let selectionStart = area.selectionStart, selectionEnd = area.selectionEnd;
    let text = area.value;
    function selectBlock(OPEN, CLOSE) {
      if (selectionStart !== selectionEnd) return false;
      const before = text.substring(0, selectionStart);
      const beforeParen = before.lastIndexOf(OPEN);
      if (beforeParen === -1) return false;
      const beforeClosingParen = before.lastIndexOf(CLOSE);
      if (beforeClosingParen !== -1 && beforeClosingParen > beforeParen) return false;
      const after = text.substring(selectionStart);
      const afterParen = after.indexOf(CLOSE);
      if (afterParen === -1) return false;
      const afterOpeningParen = after.indexOf(OPEN);
      if (afterOpeningParen !== -1 && afterOpeningParen < afterParen) return false;
      const content = text.substring(beforeParen + 1, selectionStart + afterParen);
      selectionStart = beforeParen + 1;
      selectionEnd = selectionStart + (/.*:-?[\d.]+/s.test(content) ? content.lastIndexOf(":") : content.length);
      return true;
    }
    function selectWord() {
      if (selectionStart !== selectionEnd) return;
      while (!DELIMITERS.includes(text[selectionStart - 1]) && selectionStart > 0) selectionStart--;
      while (!DELIMITERS.includes(text[selectionEnd]) && selectionEnd < text.length) selectionEnd++;
      while (text[selectionStart] === " " && selectionStart < selectionEnd) selectionStart++;
      while (text[selectionEnd - 1] === " " && selectionEnd > selectionStart) selectionEnd--;
    }
    if (!selectBlock("<", ">") && !selectBlock("(", ")") && !selectBlock("[", "]")) selectWord();

    let closeCharacter = ")";
    let delta = PRECISION_ATTENTION;
    const start = selectionStart > 0 ? text[selectionStart - 1] : "";
    const end = text[selectionEnd];
    if (start === "<") {
      closeCharacter = ">";
      delta = PRECISION_EXTRA;
    } else if ((start === "(" && end === ")") || (start === "[" && end === "]")) {
      // old-style (((emphasis))) becomes (emphasis:w)
      let numParen = 0;
      while (text[selectionStart - numParen - 1] === start && text[selectionEnd + numParen] === end) numParen++;
      let w = start === "[" ? (1 / 1.1) ** numParen : 1.1 ** numParen;
      w = Math.round(w / PRECISION_ATTENTION) * PRECISION_ATTENTION;
      text = text.slice(0, selectionStart - numParen) + "(" + text.slice(selectionStart, selectionEnd) + ":" + w + ")" + text.slice(selectionEnd + numParen);
      selectionStart -= numParen - 1;
      selectionEnd -= numParen - 1;
    } else if (start !== "(") {
      while (selectionEnd > selectionStart && text[selectionEnd - 1] === " ") selectionEnd--;
      if (selectionStart === selectionEnd) return true;
      text = text.slice(0, selectionStart) + "(" + text.slice(selectionStart, selectionEnd) + ":1.0)" + text.slice(selectionEnd);
      selectionStart++;
      selectionEnd++;
    }
    if (text[selectionEnd] !== ":") return true;
    const weightLength = text.slice(selectionEnd + 1).indexOf(closeCharacter) + 1;
    let weight = parseFloat(text.slice(selectionEnd + 1, selectionEnd + weightLength));
    if (isNaN(weight)) return true;
    weight += plus ? delta : -delta;
    weight = parseFloat(weight.toPrecision(12));
    if (Number.isInteger(weight)) weight += ".0";
    if (closeCharacter === ")" && Number(weight) === 1) {
      const endParenPos = text.substring(selectionEnd).indexOf(")");
      text = text.slice(0, selectionStart - 1) + text.slice(selectionStart, selectionEnd) + text.slice(selectionEnd + endParenPos + 1);
      selectionStart--;
      selectionEnd--;
    } else {
      text = text.slice(0, selectionEnd + 1) + weight + text.slice(selectionEnd + weightLength);
    }
    area.focus();
    area.value = text;
    area.setSelectionRange(selectionStart, selectionEnd);
    return true;
  }

  Object.assign(window.Sumi, { parseInfotext, editAttention });
})();
