// Keyboard-usable pickers: a segmented radio group (arrows move, Enter/Space choose) and a
// symbol combobox (type, arrows, Enter, Escape), following the WAI-ARIA patterns.

export function wireRadioGroup(container, options, selected, onChoose) {
  container.replaceChildren();
  const buttons = options.map(([value, label]) => {
    const b = document.createElement("button");
    b.type = "button";
    b.setAttribute("role", "radio");
    b.dataset.value = value;
    b.textContent = label;
    const on = value === selected;
    b.setAttribute("aria-checked", String(on));
    b.tabIndex = on ? 0 : -1;
    b.addEventListener("click", () => {
      if (value !== selected) onChoose(value);
    });
    container.appendChild(b);
    return b;
  });
  if (!buttons.some((b) => b.tabIndex === 0) && buttons.length) buttons[0].tabIndex = 0;
  // Assigned, not added: wiring a group again replaces its handler.
  container.onkeydown = (e) => {
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    let j = null;
    if (e.key === "ArrowRight" || e.key === "ArrowDown") j = (i + 1) % buttons.length;
    else if (e.key === "ArrowLeft" || e.key === "ArrowUp") j = (i - 1 + buttons.length) % buttons.length;
    else if (e.key === "Home") j = 0;
    else if (e.key === "End") j = buttons.length - 1;
    if (j === null) return;
    e.preventDefault();
    buttons[i].tabIndex = -1;
    buttons[j].tabIndex = 0;
    buttons[j].focus();
  };
}

export function wireCombobox(input, list, search, onChoose) {
  let items = [];
  let active = -1;
  let timer = null;
  let seq = 0;

  const close = () => {
    list.hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    active = -1;
  };

  const draw = () => {
    list.replaceChildren(
      ...items.map((sym, i) => {
        const li = document.createElement("li");
        li.id = `${list.id}-opt-${i}`;
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", String(i === active));
        li.textContent = sym;
        li.addEventListener("mousedown", (e) => {
          e.preventDefault();
          onChoose(sym);
        });
        return li;
      }),
    );
    const open = items.length > 0;
    list.hidden = !open;
    input.setAttribute("aria-expanded", String(open));
    if (active >= 0) input.setAttribute("aria-activedescendant", `${list.id}-opt-${active}`);
    else input.removeAttribute("aria-activedescendant");
  };

  const lookup = () => {
    const mine = ++seq;
    search(input.value.trim())
      .then((found) => {
        if (mine !== seq) return;
        items = found.slice(0, 20);
        active = -1;
        draw();
      })
      .catch(() => close());
  };

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(lookup, 120);
  });
  input.addEventListener("focus", () => {
    input.select();
    lookup();
  });
  input.addEventListener("blur", () => setTimeout(close, 100));
  input.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (list.hidden) {
        lookup();
        return;
      }
      const n = items.length;
      if (!n) return;
      active = e.key === "ArrowDown" ? (active + 1) % n : (active - 1 + n) % n;
      draw();
    } else if (e.key === "Enter") {
      e.preventDefault();
      const chosen = active >= 0 ? items[active] : input.value.trim();
      if (chosen) onChoose(chosen);
    } else if (e.key === "Escape") {
      close();
    }
  });
}
