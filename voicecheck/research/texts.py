"""What the synthetic voices of the speech corpus say.

Robocall-like sentences (election disinformation, bank fraud, car warranties, tax
offices, parcel scams, callback requests) and short prompts, words and numbers, so
that synthetic clips are as long as the real ones: most real recordings the corpus
uses are IVR prompts and spoken words of 0.5 to 4 s. English has the most texts;
Spanish, French, Italian, Russian, Czech, Dutch and German have a few for the
multilingual engines.

:func:`pick_texts` chooses texts for a seeded random generator, so the same seed
gives the same texts.

Examples
--------
>>> import numpy as np
>>> a = pick_texts(np.random.default_rng(7), "en", 5)
>>> a == pick_texts(np.random.default_rng(7), "en", 5)
True
>>> len(a), all(isinstance(t, str) and t for t in a)
(5, True)
"""

from __future__ import annotations

import numpy as np

__all__ = ["LANGUAGES", "SENTENCES", "SHORT", "pick_texts"]

SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "This is an automated message about the election on Tuesday.",
        "Your polling place has changed. Please check your new location before you go.",
        "Due to high turnout, voters with last names A through M vote on Wednesday.",
        "Stay home this Tuesday. Your vote can wait until November.",
        "What a bunch of malarkey. Save your vote for the November election.",
        "Polling stations will be closed tomorrow because of flooding.",
        "Remember, you can now vote by phone. Press one to cast your ballot.",
        "Your voter registration has expired. Call us back to avoid losing your vote.",
        "The primary has been moved to next week. Please spread the word.",
        "This message is from the county elections office.",
        "Voting this Tuesday only enables the other side. Stay home.",
        "Your mail-in ballot was rejected. Call this number today to fix it.",
        "This is your bank's fraud department. We noticed a suspicious charge on your card.",
        "A purchase of eight hundred dollars was attempted on your account.",
        "If you did not make this transaction, press one to speak to an agent.",
        "Your account has been locked for your protection.",
        "To verify your identity, please enter your card number after the tone.",
        "Please confirm the last four digits of your social security number.",
        "We are calling about your car's extended warranty.",
        "This is your final notice before your vehicle warranty expires.",
        "Press one now to renew your coverage at a special rate.",
        "This is the tax office. There is a lawsuit filed under your name.",
        "You owe back taxes. Failure to pay today will lead to your arrest.",
        "Please call us back immediately to settle the amount you owe.",
        "Your package could not be delivered because of an incomplete address.",
        "A parcel is waiting for you. Pay the customs fee to release it.",
        "Your delivery is on hold. Reply with your address to reschedule.",
        "Please call us back at your earliest convenience.",
        "This is a courtesy call regarding your recent order.",
        "Hi, it's me. I lost my phone. Can you call me back on this number?",
        "Mom, I'm in trouble. Please don't tell dad. I need money right away.",
        "Congratulations, you have been selected for a free cruise.",
        "Your electricity will be disconnected in thirty minutes unless you pay now.",
        "This is the social security administration. Your number has been suspended.",
        "Your computer has a virus. Our technician can fix it remotely.",
        "We have tried to reach you several times about your student loan.",
        "You qualify for a lower interest rate on your credit card debt.",
        "This call is to confirm your appointment tomorrow at nine thirty.",
        "Your prescription is ready for pickup at the pharmacy.",
        "Please hold while we transfer your call.",
        "All of our agents are busy. Your call is important to us.",
        "To hear this message again, press the star key.",
        "Thank you for calling. Please listen carefully, as our options have changed.",
        "Hello, this is Sarah from account services. Do you have a minute?",
        "I'm calling on behalf of the campaign. Can we count on your support?",
        "The governor asks all residents to stay indoors until further notice.",
        "Do not share this code with anyone. Our staff will never ask for it.",
        "Your one-time passcode has been sent. Please read it back to me.",
        "We need you to buy gift cards to pay the fine.",
        "This is your last chance to claim your refund.",
    ),
    "es": (
        "Este es un mensaje automático sobre las elecciones del martes.",
        "Su centro de votación ha cambiado. Consulte la nueva dirección.",
        "Quédese en casa este martes. Su voto puede esperar.",
        "Le llamamos del departamento de fraude de su banco.",
        "Su cuenta ha sido bloqueada por su seguridad.",
        "Su paquete no pudo ser entregado. Pague la tarifa para recibirlo.",
        "Por favor, devuélvanos la llamada lo antes posible.",
        "Usted tiene una deuda con la agencia tributaria.",
        "Pulse uno para hablar con un agente.",
        "Mamá, estoy en problemas. Necesito dinero ahora mismo.",
    ),
    "fr": (
        "Ceci est un message automatique concernant l'élection de mardi.",
        "Votre bureau de vote a changé. Vérifiez votre nouvelle adresse.",
        "Restez chez vous mardi. Votre vote peut attendre.",
        "Ici le service des fraudes de votre banque.",
        "Votre compte a été bloqué pour votre sécurité.",
        "Votre colis n'a pas pu être livré. Payez les frais de douane.",
        "Merci de nous rappeler dès que possible.",
        "Vous avez une dette auprès des impôts. Appelez-nous aujourd'hui.",
        "Appuyez sur un pour parler à un conseiller.",
        "Maman, j'ai perdu mon téléphone. Rappelle-moi à ce numéro.",
    ),
    "it": (
        "Questo è un messaggio automatico sulle elezioni di martedì.",
        "Il suo seggio elettorale è cambiato. Controlli il nuovo indirizzo.",
        "Resti a casa martedì. Il suo voto può aspettare.",
        "La chiamiamo dall'ufficio antifrode della sua banca.",
        "Il suo conto è stato bloccato per la sua sicurezza.",
        "Il suo pacco non è stato consegnato. Paghi la tassa doganale.",
        "La preghiamo di richiamarci al più presto.",
        "Risulta un debito con l'agenzia delle entrate.",
        "Prema uno per parlare con un operatore.",
        "Mamma, ho perso il telefono. Richiamami a questo numero.",
    ),
    "ru": (
        "Это автоматическое сообщение о выборах во вторник.",
        "Ваш избирательный участок изменился. Проверьте новый адрес.",
        "Оставайтесь дома во вторник. Ваш голос может подождать.",
        "Вам звонит служба безопасности вашего банка.",
        "Ваша карта заблокирована в целях безопасности.",
        "Ваша посылка не доставлена. Оплатите таможенный сбор.",
        "Пожалуйста, перезвоните нам как можно скорее.",
        "У вас есть задолженность перед налоговой службой.",
        "Нажмите один, чтобы поговорить с оператором.",
        "Мама, я потерял телефон. Перезвони мне на этот номер.",
    ),
    "cs": (
        "Toto je automatická zpráva o volbách v úterý.",
        "Vaše volební místnost se změnila. Ověřte si novou adresu.",
        "Zůstaňte v úterý doma. Váš hlas může počkat.",
        "Voláme z oddělení podvodů vaší banky.",
        "Váš účet byl z bezpečnostních důvodů zablokován.",
        "Vaši zásilku nebylo možné doručit. Zaplaťte clo.",
        "Prosím, zavolejte nám co nejdříve zpět.",
        "Máte dluh u finančního úřadu.",
        "Stiskněte jedničku pro spojení s operátorem.",
        "Mami, ztratil jsem telefon. Zavolej mi na toto číslo.",
    ),
    "nl": (
        "Dit is een automatisch bericht over de verkiezingen van dinsdag.",
        "Uw stembureau is veranderd. Controleer uw nieuwe adres.",
        "Blijf dinsdag thuis. Uw stem kan wachten.",
        "U wordt gebeld door de fraudeafdeling van uw bank.",
        "Uw rekening is geblokkeerd voor uw veiligheid.",
        "Uw pakket kon niet worden bezorgd. Betaal de invoerkosten.",
        "Wilt u ons zo snel mogelijk terugbellen?",
        "U heeft een schuld bij de belastingdienst.",
        "Druk op één om met een medewerker te spreken.",
        "Mam, ik ben mijn telefoon kwijt. Bel me terug op dit nummer.",
    ),
    "de": (
        "Dies ist eine automatische Nachricht zur Wahl am Dienstag.",
        "Ihr Wahllokal hat sich geändert. Prüfen Sie die neue Adresse.",
        "Bleiben Sie am Dienstag zu Hause. Ihre Stimme kann warten.",
        "Hier ist die Betrugsabteilung Ihrer Bank.",
        "Ihr Konto wurde zu Ihrer Sicherheit gesperrt.",
        "Ihr Paket konnte nicht zugestellt werden. Bitte zahlen Sie die Zollgebühr.",
        "Bitte rufen Sie uns so bald wie möglich zurück.",
        "Sie haben Steuerschulden beim Finanzamt.",
        "Drücken Sie die Eins, um mit einem Mitarbeiter zu sprechen.",
        "Mama, ich habe mein Handy verloren. Ruf mich unter dieser Nummer zurück.",
    ),
}
"""Robocall-like sentences (2 to 6 s when spoken), by ISO 639-1 language code."""

SHORT: dict[str, tuple[str, ...]] = {
    "en": (
        "Hello.",
        "Goodbye.",
        "Thank you.",
        "Please hold.",
        "Yes.",
        "No.",
        "Press one.",
        "Press two.",
        "Press star.",
        "Press pound.",
        "Vote.",
        "Tuesday.",
        "Wednesday.",
        "November.",
        "Election day.",
        "Polling place.",
        "Stay home.",
        "Your vote can wait.",
        "Call me back.",
        "Urgent.",
        "Final notice.",
        "Fraud alert.",
        "Your account.",
        "Your package.",
        "Warranty.",
        "Tax office.",
        "Invalid entry.",
        "Please try again.",
        "One moment please.",
        "Zero.",
        "Seven.",
        "Twelve.",
        "Eighteen.",
        "Forty two.",
        "One hundred.",
        "Extension.",
        "Operator.",
        "Main menu.",
        "Not available.",
        "Transferring.",
    ),
    "es": (
        "Hola.",
        "Adiós.",
        "Gracias.",
        "Espere, por favor.",
        "Sí.",
        "Pulse uno.",
        "Martes.",
        "Su voto.",
        "Urgente.",
        "Cuenta bloqueada.",
    ),
    "fr": (
        "Bonjour.",
        "Au revoir.",
        "Merci.",
        "Patientez.",
        "Oui.",
        "Appuyez sur un.",
        "Mardi.",
        "Votre vote.",
        "Urgent.",
        "Compte bloqué.",
    ),
    "it": (
        "Buongiorno.",
        "Arrivederci.",
        "Grazie.",
        "Attenda, prego.",
        "Sì.",
        "Prema uno.",
        "Martedì.",
        "Il suo voto.",
        "Urgente.",
        "Conto bloccato.",
    ),
    "ru": (
        "Здравствуйте.",
        "До свидания.",
        "Спасибо.",
        "Подождите.",
        "Да.",
        "Нажмите один.",
        "Вторник.",
        "Ваш голос.",
        "Срочно.",
        "Карта заблокирована.",
    ),
    "cs": (
        "Dobrý den.",
        "Na shledanou.",
        "Děkuji.",
        "Vydržte.",
        "Ano.",
        "Stiskněte jedna.",
        "Úterý.",
        "Váš hlas.",
        "Naléhavé.",
        "Účet zablokován.",
    ),
    "nl": (
        "Hallo.",
        "Tot ziens.",
        "Dank u.",
        "Een moment.",
        "Ja.",
        "Druk op één.",
        "Dinsdag.",
        "Uw stem.",
        "Dringend.",
        "Rekening geblokkeerd.",
    ),
    "de": (
        "Hallo.",
        "Auf Wiederhören.",
        "Danke.",
        "Bitte warten.",
        "Ja.",
        "Drücken Sie eins.",
        "Dienstag.",
        "Ihre Stimme.",
        "Dringend.",
        "Konto gesperrt.",
    ),
}
"""Single words, numbers and short phrases (0.4 to 1.5 s when spoken)."""

LANGUAGES: tuple[str, ...] = tuple(SENTENCES)
"""Language codes that have texts."""

_NUMBER_TEMPLATES = {
    "en": ("Your code is {d}.", "Extension {d}.", "Press {n}.", "{d}", "Case number {d}."),
    "es": ("Su código es {d}.", "{d}"),
    "fr": ("Votre code est {d}.", "{d}"),
    "it": ("Il suo codice è {d}.", "{d}"),
    "ru": ("Ваш код {d}.", "{d}"),
    "cs": ("Váš kód je {d}.", "{d}"),
    "nl": ("Uw code is {d}.", "{d}"),
    "de": ("Ihr Code ist {d}.", "{d}"),
}


def _number_text(rng: np.random.Generator, language: str) -> str:
    templates = _NUMBER_TEMPLATES[language]
    template = templates[int(rng.integers(len(templates)))]
    digits = " ".join(str(int(d)) for d in rng.integers(0, 10, size=int(rng.integers(2, 6))))
    return template.format(d=digits, n=int(rng.integers(1, 10)))


def pick_texts(
    rng: np.random.Generator,
    language: str,
    n: int,
    *,
    short_fraction: float = 0.4,
    number_fraction: float = 0.1,
) -> list[str]:
    """Choose ``n`` texts in ``language``: sentences, short phrases and numbers.

    Parameters
    ----------
    rng : np.random.Generator
        Decides everything: the same generator state gives the same texts.
    language : str
        An ISO 639-1 code in :data:`LANGUAGES`; a regional tag such as ``en-GB``
        uses its language's texts.
    n : int
        How many texts. Each pool is used up (in a shuffled order) before any of
        its texts repeats.
    short_fraction, number_fraction : float
        Expected shares of short phrases and of spoken digit strings; the rest
        are sentences.

    Returns
    -------
    list of str
        ``n`` texts.

    Raises
    ------
    ValueError
        If there are no texts for ``language`` or a fraction is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> texts = pick_texts(np.random.default_rng(0), "fr", 3, short_fraction=1, number_fraction=0)
    >>> all(t in SHORT["fr"] for t in texts)
    True
    """
    lang = language.split("-")[0].split("_")[0].lower()
    if lang not in SENTENCES:
        raise ValueError(
            f"no texts for language '{language}'; expected one of {', '.join(LANGUAGES)}"
        )
    if not (0 <= short_fraction <= 1 and 0 <= number_fraction <= 1) or (
        short_fraction + number_fraction > 1
    ):
        raise ValueError(
            f"short_fraction {short_fraction} and number_fraction {number_fraction} must be "
            "in [0, 1] and add up to at most 1"
        )
    pools = {"sentence": list(SENTENCES[lang]), "short": list(SHORT[lang])}
    order: dict[str, list[str]] = {"sentence": [], "short": []}
    out = []
    for _ in range(n):
        u = float(rng.random())
        if u < number_fraction:
            out.append(_number_text(rng, lang))
            continue
        kind = "short" if u < number_fraction + short_fraction else "sentence"
        if not order[kind]:
            order[kind] = [pools[kind][i] for i in rng.permutation(len(pools[kind]))]
        out.append(order[kind].pop())
    return out
