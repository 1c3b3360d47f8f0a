// Building the page's elements: HTML and SVG elements from a tag, attributes and children (text
// is never parsed as HTML), and the few composites every page uses.

const SVG_NS = 'http://www.w3.org/2000/svg';

function setAttributes(element, attributes) {
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2), value);
    } else {
      element.setAttribute(key, value === true ? '' : String(value));
    }
  }
}

function appendChildren(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h('a', {href: '#/'}, 'text', child, ...). Text is never parsed as HTML. */
export function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  setAttributes(element, attributes);
  appendChildren(element, children);
  return element;
}

/** An SVG element. */
export function svg(tag, attributes, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  setAttributes(element, attributes);
  appendChildren(element, children);
  return element;
}

export function table(headers, rows, attributes) {
  return h('table', attributes,
    h('thead', null, h('tr', null, headers.map((title) => h('th', null, title)))),
    h('tbody', null, rows.length ? rows : h('tr', null, h('td', { colspan: headers.length, class: 'muted' }, 'None'))));
}

export function card(label, value, attributes) {
  return h('div', { class: 'card', ...attributes }, h('div', { class: 'card-value' }, value), h('div', { class: 'card-label' }, label));
}

export function badge(status) {
  const text = status || 'UNKNOWN';
  return h('span', { class: `badge status-${text.toLowerCase()}`, 'data-status': text }, text);
}
