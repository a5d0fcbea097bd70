"""Build the course's Spanish sentiment dataset (course_utils/data/sentimiento.jsonl).

Short product and service reviews written for this course (CC0): POSITIVO, NEGATIVO and
NEUTRAL, balanced, deduplicated, UTF-8. Most are built from hand-written templates and
vocabulary (``template`` says which); 24 are written one by one (``template == "manual"``) and
are meant for evaluation only. Run it again to regenerate the same file (fixed seed):

    python scripts/make_sentiment_dataset.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "course_utils" / "data" / "sentimiento.jsonl"
INSTRUCTION = "Clasifica el sentimiento de la reseña como POSITIVO, NEGATIVO o NEUTRAL."
PER_CLASS = 110

# (noun phrase, gender, number)
ITEMS = [
    ("el teléfono", "m", "s"), ("la cafetera", "f", "s"), ("el hotel", "m", "s"),
    ("la mochila", "f", "s"), ("los auriculares", "m", "p"), ("la aplicación", "f", "s"),
    ("el restaurante", "m", "s"), ("la silla", "f", "s"), ("el portátil", "m", "s"),
    ("las zapatillas", "f", "p"), ("el curso", "m", "s"), ("la lavadora", "f", "s"),
    ("el servicio técnico", "m", "s"), ("la batería", "f", "s"), ("el colchón", "m", "s"),
    ("la impresora", "f", "s"), ("el libro", "m", "s"), ("las gafas", "f", "p"),
    ("el reloj", "m", "s"), ("la tienda online", "f", "s"), ("el envío", "m", "s"),
    ("la bicicleta", "f", "s"), ("el abrigo", "m", "s"), ("la televisión", "f", "s"),
]

POS_ADJ = [("excelente", "excelente"), ("fantástico", "fantástica"), ("muy bueno", "muy buena"),
           ("perfecto", "perfecta"), ("genial", "genial"), ("estupendo", "estupenda")]
NEG_ADJ = [("horrible", "horrible"), ("malísimo", "malísima"), ("defectuoso", "defectuosa"),
           ("pésimo", "pésima"), ("muy malo", "muy mala"), ("decepcionante", "decepcionante")]

POSITIVE = [
    "{item} es {adj}, lo recomiendo.",
    "Estoy encantado con {item}: {adj}.",
    "¡Qué maravilla! {Item} superó mis expectativas.",
    "{Item} funciona de maravilla desde el primer día.",
    "Me encantó {item}, volvería a comprarlo sin dudar.",
    "Calidad impecable: {item} vale cada euro.",
    "{Item} llegó antes de lo previsto y en perfecto estado.",
    "Muy contento con {item}, el trato fue amabilísimo.",
    "Sin duda la mejor compra del año: {item} es {adj}.",
    "Cinco estrellas para {item}, todo fue perfecto.",
    "{Item} es cómodo, bonito y muy fácil de usar.",
    "Repetiría mil veces, {item} es {adj}.",
]
NEGATIVE = [
    "{item} es {adj}, no lo recomiendo.",
    "Muy decepcionado con {item}.",
    "{Item} dejó de funcionar a la semana.",
    "No vuelvo a comprar: {item} llegó roto y tarde.",
    "Una pérdida de dinero, {item} es {adj}.",
    "{Item} no funcionó como esperaba y nadie me ayudó.",
    "Pedí la devolución de {item} porque era {adj}.",
    "Pésima experiencia con {item}, un desastre total.",
    "{Item} se rompió al segundo uso.",
    "Nunca más: {item} es {adj} y el soporte no responde.",
    "Me arrepiento de haber comprado {item}.",
    "Una estrella, y porque no se puede poner cero: {item} es {adj}.",
]
NEUTRAL = [
    "Compré {item} la semana pasada.",
    "{Item} llegó el martes por la mañana.",
    "{Item} es de color gris y viene en una caja de cartón.",
    "Todavía no he probado {item}, lo usaré el mes que viene.",
    "{Item} es parecido al modelo del año pasado.",
    "Ni bueno ni malo: {item} cumple lo justo.",
    "{Item} tiene algunas cosas buenas y otras no tanto.",
    "Recibí {item} con la factura dentro del paquete.",
    "El manual de {item} está en español y en inglés.",
    "Normal, {item} hace lo que dice la descripción y poco más.",
    "Pagué {item} con tarjeta y el cargo aparece como tienda online.",
    "{Item} mide lo que indica la ficha del producto.",
]


#: Reviews written one by one (no template), used only for evaluation.
HANDWRITTEN = [
    ("La pizza llegó caliente y estaba riquísima, pediremos otra vez.", "POSITIVO"),
    ("Por fin un cargador que carga rápido de verdad. Encantada.", "POSITIVO"),
    ("El profesor explica con paciencia y los ejercicios ayudan mucho.", "POSITIVO"),
    ("Habitación limpia, cama cómoda y un desayuno buenísimo.", "POSITIVO"),
    ("Mi hija está feliz con el patinete, es ligero y resistente.", "POSITIVO"),
    ("El técnico vino puntual y arregló la caldera en diez minutos.", "POSITIVO"),
    ("Gran relación calidad-precio, me ha sorprendido para bien.", "POSITIVO"),
    ("La app es rapidísima y por fin entiendo mis gastos del mes.", "POSITIVO"),
    ("Tres semanas esperando el reembolso y nadie contesta los correos.", "NEGATIVO"),
    ("La pantalla se raya con solo mirarla, qué decepción.", "NEGATIVO"),
    ("El camarero fue muy grosero y la comida llegó fría.", "NEGATIVO"),
    ("Se calienta muchísimo y hace un ruido insoportable.", "NEGATIVO"),
    ("Cobran gastos ocultos que no aparecían en ninguna parte.", "NEGATIVO"),
    ("La funda se despegó a los tres días, dinero tirado.", "NEGATIVO"),
    ("Después de la actualización la app se cierra sola todo el rato.", "NEGATIVO"),
    ("El vuelo se retrasó cinco horas y no nos dieron ni agua.", "NEGATIVO"),
    ("El paquete incluye el cable USB y un adaptador.", "NEUTRAL"),
    ("La reunión de clientes se cambió al jueves a las diez.", "NEUTRAL"),
    ("El modelo azul y el negro cuestan lo mismo.", "NEUTRAL"),
    ("La tienda abre de lunes a sábado de nueve a ocho.", "NEUTRAL"),
    ("Hice el pedido desde el móvil y pagué contra reembolso.", "NEUTRAL"),
    ("El libro tiene doscientas páginas y varias ilustraciones.", "NEUTRAL"),
    ("La garantía es de dos años según la ficha técnica.", "NEUTRAL"),
    ("Lo uso sobre todo los fines de semana para ir al trabajo en bici.", "NEUTRAL"),
]


def _adjective(pair: tuple[str, str], gender: str, number: str) -> str:
    adj = pair[0] if gender == "m" else pair[1]
    if number == "p":
        words = adj.split()
        last = words[-1]
        if last.endswith(("e", "o", "a")):
            last += "s"
        elif last.endswith("l"):
            last += "es"
        words[-1] = last
        adj = " ".join(words)
    return adj


def _fill(template: str, item: tuple[str, str, str], adjectives, rng: random.Random) -> str:
    noun, gender, number = item
    adj = _adjective(rng.choice(adjectives), gender, number) if adjectives else ""
    text = template.replace("{item}", noun).replace("{Item}", noun[0].upper() + noun[1:])
    text = text.replace("{adj}", adj)
    if number == "p":  # verb agreement for the few plural items
        for sing, plur in ((" es ", " son "), (" llegó ", " llegaron "), (" funciona ", " funcionan "),
                           (" dejó ", " dejaron "), (" se rompió ", " se rompieron "),
                           (" superó ", " superaron "), (" no funcionó ", " no funcionaron "),
                           (" tiene ", " tienen "), (" cumple ", " cumplen "), (" mide ", " miden "),
                           (" hace ", " hacen "), (" era", " eran"), (" vale ", " valen ")):
            text = text.replace(sing, plur)
        text = text.replace("comprarlo", "comprarlos" if gender == "m" else "comprarlas")
        text = text.replace("lo usaré", "los usaré" if gender == "m" else "las usaré")
        text = text.replace("lo recomiendo", "los recomiendo" if gender == "m" else "las recomiendo")
    elif gender == "f":
        text = text.replace("comprarlo", "comprarla").replace("lo usaré", "la usaré")
        text = text.replace("lo recomiendo", "la recomiendo")
    text = text.replace("Estoy encantado", "Estoy encantado")
    return text[0].upper() + text[1:]


def build(seed: int = 2024) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for label, templates, adjectives in (("POSITIVO", POSITIVE, POS_ADJ),
                                         ("NEGATIVO", NEGATIVE, NEG_ADJ),
                                         ("NEUTRAL", NEUTRAL, None)):
        seen = set()
        candidates = [(k, t, i) for k, t in enumerate(templates) for i in ITEMS]
        rng.shuffle(candidates)
        for k, template, item in candidates:
            text = _fill(template, item, adjectives, rng)
            if text not in seen:
                seen.add(text)
                rows.append({"instruction": INSTRUCTION, "input": text, "output": label,
                             "template": f"{label[:3]}{k:02d}"})
            if len(seen) == PER_CLASS:
                break
    rows += [{"instruction": INSTRUCTION, "input": text, "output": label, "template": "manual"}
             for text, label in HANDWRITTEN]
    rng.shuffle(rows)
    return rows


def main() -> None:
    rows = build()
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} ejemplos -> {OUT}")


if __name__ == "__main__":
    main()
