package devserver

import _ "github.com/chromedp/chromedp"
