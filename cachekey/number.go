package cachekey

import "strconv"

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// maxSmallExpDigits is the most exponent digits (after leading zeros) parsed
// into an int64; longer exponents take an exact math/big path.
const maxSmallExpDigits = 18

// digits addresses the digit string of a number literal, which is split by
// the decimal point: index k < nI is src[intStart+k], larger indices are in
// the fraction, src[fracStart+k-nI].
type digits struct {
	src       []byte
	intStart  int
	nI        int
	fracStart int
}

// append appends digits [a, b) of the combined digit string.
func (d *digits) append(dst []byte, a, b int) []byte {
	if a < d.nI {
		dst = append(dst, d.src[d.intStart+a:d.intStart+min(b, d.nI)]...)
	}
	if b > d.nI {
		dst = append(dst, d.src[d.fracStart+max(a, d.nI)-d.nI:d.fracStart+b-d.nI]...)
	}
	return dst
}

// number reads the number at s.pos and appends its canonical form, which is
// documented on Canonicalize.
func (s *state) number(dst []byte) ([]byte, error) {
	src := s.src
	start, i := s.pos, s.pos
	neg := false
	if src[i] == '-' {
		neg = true
		i++
	}
	intStart := i
	if i >= len(src) || !isDigit(src[i]) {
		return dst, s.fail(msgMissingDigits, i)
	}
	if src[i] == '0' {
		i++
		if i < len(src) && isDigit(src[i]) {
			return dst, s.fail(msgLeadingZero, intStart)
		}
	} else {
		for i < len(src) && isDigit(src[i]) {
			i++
		}
	}
	intEnd := i
	fracStart, fracEnd := i, i
	if i < len(src) && src[i] == '.' {
		i++
		fracStart = i
		for i < len(src) && isDigit(src[i]) {
			i++
		}
		if i == fracStart {
			return dst, s.fail(msgMissingDigits, i)
		}
		fracEnd = i
	}
	expNeg := false
	expStart, expEnd := i, i
	if i < len(src) && (src[i] == 'e' || src[i] == 'E') {
		i++
		if i < len(src) && (src[i] == '+' || src[i] == '-') {
			expNeg = src[i] == '-'
			i++
		}
		expStart = i
		for i < len(src) && isDigit(src[i]) {
			i++
		}
		if i == expStart {
			return dst, s.fail(msgMissingDigits, i)
		}
		expEnd = i
	}
	s.pos = i

	if fracEnd == fracStart && expEnd == expStart && intEnd-intStart <= 21 {
		// A plain integer of at most 21 digits is already canonical,
		// except for the sign of -0.
		if intEnd-intStart == 1 && src[intStart] == '0' {
			return append(dst, '0'), nil
		}
		return append(dst, src[start:intEnd]...), nil
	}

	// The value is C × 10^(P - nF), C the integer and fraction digits
	// concatenated. Trim C to D = C[lz:last+1].
	nI, nF := intEnd-intStart, fracEnd-fracStart
	lz := -1
	for k := intStart; k < intEnd; k++ {
		if src[k] != '0' {
			lz = k - intStart
			break
		}
	}
	if lz < 0 {
		for k := fracStart; k < fracEnd; k++ {
			if src[k] != '0' {
				lz = nI + k - fracStart
				break
			}
		}
	}
	if lz < 0 {
		return append(dst, '0'), nil // any zero, including -0 and 0e99
	}
	last := -1
	for k := fracEnd - 1; k >= fracStart; k-- {
		if src[k] != '0' {
			last = nI + k - fracStart
			break
		}
	}
	if last < 0 {
		for k := intEnd - 1; k >= intStart; k-- {
			if src[k] != '0' {
				last = k - intStart
				break
			}
		}
	}
	n := last + 1 - lz       // len(D)
	tz := nI + nF - 1 - last // trailing zeros dropped from C
	// Scientific exponent X = P - nF + tz + n - 1, value = D[0].D[1:] × 10^X.
	adj := int64(tz - nF + n - 1)
	d := digits{src: src, intStart: intStart, nI: nI, fracStart: fracStart}

	if neg {
		dst = append(dst, '-')
	}
	for expStart < expEnd && src[expStart] == '0' {
		expStart++
	}
	if expEnd-expStart > maxSmallExpDigits {
		// |P| >= 10^18 dwarfs adj (bounded by the input length), so the
		// number is far outside the positional range and X has P's sign:
		// |X| = |P| + adj for P > 0, |P| - adj for P < 0.
		dst = appendMantissa(dst, &d, lz, n)
		if expNeg {
			dst = append(dst, 'e', '-')
			adj = -adj
		} else {
			dst = append(dst, 'e', '+')
		}
		return appendDecimalSum(dst, src[expStart:expEnd], adj), nil
	}
	var p int64
	for _, c := range src[expStart:expEnd] {
		p = p*10 + int64(c-'0')
	}
	if expNeg {
		p = -p
	}
	x := p + adj
	switch {
	case 0 <= x && x < 21:
		intDigits := int(x) + 1
		if intDigits >= n {
			dst = d.append(dst, lz, lz+n)
			dst = appendRepeat(dst, '0', intDigits-n)
		} else {
			dst = d.append(dst, lz, lz+intDigits)
			dst = append(dst, '.')
			dst = d.append(dst, lz+intDigits, lz+n)
		}
	case -7 < x && x < 0:
		dst = append(dst, '0', '.')
		dst = appendRepeat(dst, '0', int(-x-1))
		dst = d.append(dst, lz, lz+n)
	default:
		dst = appendMantissa(dst, &d, lz, n)
		if x < 0 {
			dst = append(dst, 'e', '-')
			dst = strconv.AppendUint(dst, uint64(-x), 10)
		} else {
			dst = append(dst, 'e', '+')
			dst = strconv.AppendUint(dst, uint64(x), 10)
		}
	}
	return dst, nil
}

// appendMantissa appends D as d.ddd (or just d).
func appendMantissa(dst []byte, d *digits, lz, n int) []byte {
	dst = d.append(dst, lz, lz+1)
	if n > 1 {
		dst = append(dst, '.')
		dst = d.append(dst, lz+1, lz+n)
	}
	return dst
}

// appendDecimalSum appends the decimal digits of p + delta, where p is a
// digit string of more than 18 digits without leading zeros and
// |delta| < 10^18, so the sum is positive. It runs in time linear in len(p)
// (math/big would be quadratic in the worst case for huge inputs).
func appendDecimalSum(dst, p []byte, delta int64) []byte {
	const tailDigits = 18
	const tailMod = 1_000_000_000_000_000_000 // 10^18
	head, tailText := p[:len(p)-tailDigits], p[len(p)-tailDigits:]
	var tail int64
	for _, c := range tailText {
		tail = tail*10 + int64(c-'0')
	}
	tail += delta
	mark := len(dst)
	switch {
	case tail >= tailMod: // carry into head
		tail -= tailMod
		j := len(head) - 1
		for j >= 0 && head[j] == '9' {
			j--
		}
		if j < 0 {
			dst = append(dst, '1')
		} else {
			dst = append(dst, head[:j]...)
			dst = append(dst, head[j]+1)
		}
		dst = appendRepeat(dst, '0', len(head)-j-1)
	case tail < 0: // borrow from head, which is not zero
		tail += tailMod
		j := len(head) - 1
		for head[j] == '0' {
			j--
		}
		dst = append(dst, head[:j]...)
		dst = append(dst, head[j]-1)
		dst = appendRepeat(dst, '9', len(head)-j-1)
	default:
		dst = append(dst, head...)
	}
	var buf [tailDigits]byte
	for i := tailDigits - 1; i >= 0; i-- {
		buf[i] = byte('0' + tail%10)
		tail /= 10
	}
	dst = append(dst, buf[:]...)
	// A borrow can leave leading zeros ("1000..." - 1); drop them.
	k := mark
	for dst[k] == '0' {
		k++
	}
	if k > mark {
		dst = append(dst[:mark], dst[k:]...)
	}
	return dst
}

func appendRepeat(dst []byte, c byte, n int) []byte {
	for ; n > 0; n-- {
		dst = append(dst, c)
	}
	return dst
}
