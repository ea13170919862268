// The sharp peer: what a Node.js thumbnail worker runs today, one process over a list of files.
//
//     node bench/sharp/peer.js LIST.json OUT_DIR [TIMINGS.json] [--blur 3x3|auto]
//
// As bench/peers.py's vips peer, through sharp (libvips inside): decode once
// (.rotate() applies the EXIF orientation) into raw pixels, then each
// derivative from them: thumbnail resize(kernel lanczos3) to 256 wide; blur
// the 3x3 [1 2 1] kernel (convolve, scale 16) or, with --blur auto, blur(sigma)
// with sigma 1.5% of the shorter side (at least 1, at most 50) and the mask to
// 3 sigma (minAmplitude exp(-4.5), as the vips peer); low-quality resize
// (kernel nearest) to half size; .webp(quality, effort 4), no metadata
// (sharp keeps none unless asked).  sharp.concurrency(1) and no cache: the
// harness runs N processes, as it does for vips.
"use strict";
const fs = require("fs");
const path = require("path");
const sharp = require("sharp");

const THUMB_WIDTH = 256;
const QUALITY = { thumbnail: 80, blur: 80, "low-quality": 30 };
const EFFORT = 4;
const OPERATIONS = ["thumbnail", "blur", "low-quality"];
const MIN_AMPL = 0.0111;

sharp.concurrency(1);
sharp.cache(false);

const now = () => Number(process.hrtime.bigint()) / 1e9;

function autoSigma(w, h) {
  return Math.min(50, Math.max(1, 0.015 * Math.min(w, h)));
}

function derivative(raw, info, op, blur) {
  const { width: w, height: h, channels } = info;
  const img = sharp(raw, { raw: { width: w, height: h, channels } });
  if (op === "thumbnail") {
    if (w <= THUMB_WIDTH) return img;
    return img.resize(THUMB_WIDTH, Math.max(1, Math.round((h * THUMB_WIDTH) / w)), { kernel: "lanczos3", fit: "fill" });
  }
  if (op === "blur") {
    if (blur === "auto") return img.blur({ sigma: autoSigma(w, h), minAmplitude: MIN_AMPL, precision: "integer" });
    return img.convolve({ width: 3, height: 3, kernel: [1, 2, 1, 2, 4, 2, 1, 2, 1], scale: 16 });
  }
  return img.resize(Math.max(1, Math.floor(w / 2)), Math.max(1, Math.floor(h / 2)), { kernel: "nearest", fit: "fill" });
}

async function one(src, out, blur) {
  const t = {};
  const t0 = now();
  const { data, info } = await sharp(src).rotate().raw().toBuffer({ resolveWithObject: true });
  t.decode = now() - t0;
  for (const op of OPERATIONS) {
    const a = now();
    const buf = await derivative(data, info, op, blur).webp({ quality: QUALITY[op], effort: EFFORT }).toBuffer();
    const b = now();
    const stem = path.basename(src, path.extname(src));
    fs.writeFileSync(path.join(out, `${stem}_${op}.webp`), buf);
    t[`op+encode:${op}`] = b - a;
    t[`write:${op}`] = now() - b;
  }
  t.pixels = info.width * info.height;
  return t;
}

async function main(argv) {
  let blur = "3x3";
  const i = argv.indexOf("--blur");
  if (i >= 0) {
    blur = argv[i + 1];
    argv = argv.slice(0, i).concat(argv.slice(i + 2));
    if (blur !== "3x3" && blur !== "auto") throw new Error(`--blur must be 3x3 or auto, not ${blur}`);
  }
  const [listFile, outDir, timingsFile] = argv;
  const jobs = JSON.parse(fs.readFileSync(listFile, "utf8"));
  const timings = [];
  for (const [src, rel] of jobs) {
    const out = path.join(outDir, rel);
    fs.mkdirSync(out, { recursive: true });
    const t = await one(src, out, blur);
    t.file = src;
    timings.push(t);
  }
  if (timingsFile) fs.writeFileSync(timingsFile, JSON.stringify(timings));
}

main(process.argv.slice(2)).catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
