"""The browser side of unet-export: driver.mjs (a headless Chromium through puppeteer-core), the bench page, the
web app template and the pinned npm packages (package-lock.json; make setup-web installs node_modules here)."""
